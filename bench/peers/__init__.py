"""The peers the bench runs side by side with the bridge: a naive Starlette hand-roll, Django Channels, broadcaster."""
