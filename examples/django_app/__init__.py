"""A Django project with the bridge mounted in it: see asgi.py."""
