"""HTTP apps over the prediction and interactive sessions (no model logic here): ``interactive_app.create_app``."""
