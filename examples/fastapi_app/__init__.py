"""A FastAPI app with the bridge mounted in it: see app.py."""
