"""Speech in: PCM decoding and resampling, the log-mel front end, per-frame mel windows."""
