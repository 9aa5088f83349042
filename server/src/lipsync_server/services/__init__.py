"""gRPC adapters: each converts protobuf messages to data-plane calls and back."""
