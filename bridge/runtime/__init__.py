"""The machinery one bridge process runs on, whatever the backend: the run engine, the hub, feeds,
output and input streams, wait tokens, access tokens, and `Bridge`, which holds them together."""
