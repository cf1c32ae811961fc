"""Generated protobuf and gRPC stubs for the toolcall.v1 API (see protos/)."""
