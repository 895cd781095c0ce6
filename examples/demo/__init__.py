"""The demo: `python -m examples.demo` serves the bridge, the demo tasks and the demo page."""
