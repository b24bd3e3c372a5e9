"""What every layer stands on: devices and numeric precision, image files in and out, where files live."""
