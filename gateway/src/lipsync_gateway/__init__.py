"""The WebRTC gateway: a browser's microphone in, the avatar's video and the same speech out."""

# A frame not ready this long after the speech it shows is skipped: a viewer sees a lower frame
# rate from a server that cannot keep up, never a growing delay.
DEFAULT_LATENCY_BUDGET_MS = 1000
