"""Converters between reel's model folders and other libraries' checkpoint layouts."""
