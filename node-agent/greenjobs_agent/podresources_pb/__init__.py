"""Generated protobuf/gRPC code of the kubelet PodResources API v1 subset (see api.proto)."""
