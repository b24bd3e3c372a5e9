"""What every layer stands on: devices, numeric precision, torchrun processes, image files in and out, file locations."""
