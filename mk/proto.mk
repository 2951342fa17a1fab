# Regenerates the committed protobuf-c code for the Triton client from proto/grpc_service.proto.
# Included from the top-level Makefile. Needs protobuf-c-compiler (protoc-c).
PROTO_OUT := Shared/CTritonProto

.PHONY: proto
proto: proto/grpc_service.proto
	protoc-c --proto_path=proto --c_out=$(PROTO_OUT) proto/grpc_service.proto
	mkdir -p $(PROTO_OUT)/include
	mv $(PROTO_OUT)/grpc_service.pb-c.h $(PROTO_OUT)/include/grpc_service.pb-c.h
	rm -f $(PROTO_OUT)/placeholder.c $(PROTO_OUT)/include/placeholder.h
	printf '#include "grpc_service.pb-c.h"\n' > $(PROTO_OUT)/include/CTritonProto.h
