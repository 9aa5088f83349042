"""The WebRTC gateway: a browser's microphone in, the avatar's video and the same speech out."""
