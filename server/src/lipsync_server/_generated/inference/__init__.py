"""Generated from protos/ by server/generate_protos.sh; do not edit."""
