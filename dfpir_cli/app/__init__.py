"""The local web app (`dfpir app`): restore photos in the browser through the Python API."""
