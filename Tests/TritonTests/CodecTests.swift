import Testing

@testable import TritonClient

/// A minimal protobuf writer for building expected/hand-made messages byte by byte.
private struct Proto {
    var bytes: [UInt8] = []
    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
    mutating func tag(_ field: Int, _ wire: Int) { varint(UInt64(field << 3 | wire)) }
    mutating func bytes(_ field: Int, _ b: [UInt8]) {
        tag(field, 2)
        varint(UInt64(b.count))
        bytes.append(contentsOf: b)
    }
    mutating func string(_ field: Int, _ s: String) { bytes(field, Array(s.utf8)) }
    mutating func int(_ field: Int, _ v: Int) {
        tag(field, 0)
        varint(UInt64(v))
    }
    var framed: [UInt8] {
        let n = bytes.count
        return [0, UInt8(n >> 24 & 0xff), UInt8(n >> 16 & 0xff), UInt8(n >> 8 & 0xff), UInt8(n & 0xff)] + bytes
    }
}

private func floatBytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
}

@Suite struct GRPCFramingTests {
    @Test func prefixIsFlagThenBigEndianLength() {
        var buffer = [UInt8](repeating: 0xff, count: 5)
        GRPCFraming.writePrefix(length: 0x0102_0304, into: &buffer)
        #expect(buffer == [0, 1, 2, 3, 4])
    }

    @Test func singleMessageRange() throws {
        #expect(try GRPCFraming.singleMessage(in: [0, 0, 0, 0, 2, 9, 9]) == 5..<7)
        #expect(try GRPCFraming.singleMessage(in: [0, 0, 0, 0, 0]) == 5..<5)
    }

    @Test func malformedBodiesAreProtocolViolations() {
        for body: [UInt8] in [[], [0, 0, 0], [1, 0, 0, 0, 1, 7], [0, 0, 0, 0, 3, 1], [0, 0, 0, 0, 1, 1, 2]] {
            #expect(throws: TritonError.self) { try GRPCFraming.singleMessage(in: body) }
            do {
                _ = try GRPCFraming.singleMessage(in: body)
            } catch {
                #expect(error.code == .protocolViolation)
            }
        }
    }

    @Test func timeoutHeaderUsesAtMostEightDigitsRoundingUp() {
        #expect(GRPCFraming.timeoutHeader(.nanoseconds(1500)) == "1500n")
        #expect(GRPCFraming.timeoutHeader(.milliseconds(100)) == "100000u")
        #expect(GRPCFraming.timeoutHeader(.seconds(5)) == "5000000u")
        #expect(GRPCFraming.timeoutHeader(.seconds(200_000)) == "200000S")
        #expect(GRPCFraming.timeoutHeader(.zero) == "1n")
        #expect(GRPCFraming.timeoutHeader(.milliseconds(-3)) == "1n")
        // 99_999_999.5 ns rounds up to 100_000_000 ns, which needs the next unit.
        #expect(GRPCFraming.timeoutHeader(.nanoseconds(99_999_999) + .nanoseconds(1)) == "100000u")
    }

    @Test func grpcMessageIsPercentDecoded() {
        #expect(GRPCFraming.decodeMessage(Array("a%20b%25c".utf8)) == "a b%c")
        #expect(GRPCFraming.decodeMessage(Array("bad%zz%4".utf8)) == "bad%zz%4")
        #expect(GRPCFraming.decodeMessage(Array("caf%C3%A9".utf8)) == "café")
    }

    @Test func outcomeMapsStatusTrailersResetsAndHTTP() {
        #expect(GRPCFraming.outcome(httpStatus: 200, grpcStatus: 0, grpcMessage: nil, resetCode: 0) == nil)
        let invalid = GRPCFraming.outcome(httpStatus: 200, grpcStatus: 3, grpcMessage: "bad shape", resetCode: 0)
        #expect(invalid?.code == .invalidArgument && invalid?.message == "bad shape" && invalid?.grpcStatus == 3)
        #expect(GRPCFraming.outcome(httpStatus: 200, grpcStatus: 5, grpcMessage: nil, resetCode: 0)?.code == .notFound)
        #expect(
            GRPCFraming.outcome(httpStatus: 200, grpcStatus: 14, grpcMessage: nil, resetCode: 0)?.code == .unavailable)
        #expect(GRPCFraming.outcome(httpStatus: 200, grpcStatus: 99, grpcMessage: nil, resetCode: 0)?.code == .unknown)
        #expect(
            GRPCFraming.outcome(httpStatus: 200, grpcStatus: nil, grpcMessage: nil, resetCode: 7)?.code == .unavailable)
        #expect(
            GRPCFraming.outcome(httpStatus: 200, grpcStatus: nil, grpcMessage: nil, resetCode: 2)?.code
                == .internalError)
        #expect(
            GRPCFraming.outcome(httpStatus: 503, grpcStatus: nil, grpcMessage: nil, resetCode: 0)?.code == .unavailable)
        #expect(
            GRPCFraming.outcome(httpStatus: 404, grpcStatus: nil, grpcMessage: nil, resetCode: 0)?.code
                == .unimplemented)
    }

    @Test func errorCodesAndRetriability() {
        #expect(TritonError(code: .connection, message: "x").isRetriable)
        #expect(TritonError(code: .deadlineExceeded, message: "x").isRetriable)
        #expect(!TritonError(code: .invalidArgument, message: "x").isRetriable)
        let e = TritonError(code: .notFound, message: "no model", grpcStatus: 5)
        #expect(e.description == "Triton notFound (grpc-status 5): no model")
    }

    @Test func endpointParsing() throws {
        let c = try TritonClientConfiguration(url: "grpc://127.0.0.1:18001/")
        #expect(c.host == "127.0.0.1" && c.port == 18001)
        let v6 = try TritonClientConfiguration(url: "[::1]:8001")
        #expect(v6.host == "::1" && v6.port == 8001)
        #expect(throws: TritonError.self) { try TritonClientConfiguration(url: "localhost") }
        #expect(throws: TritonError.self) { try TritonClientConfiguration(url: "localhost:0") }
    }
}

@Suite struct InferenceCodecTests {
    @Test func modelRequestBytes() {
        #expect(InferenceCodec.modelRequest(name: "m", version: "1") == [0, 0, 0, 0, 6, 0x0a, 1, 0x6d, 0x12, 1, 0x31])
        // proto3 omits empty strings.
        #expect(InferenceCodec.modelRequest(name: "m", version: "") == [0, 0, 0, 0, 3, 0x0a, 1, 0x6d])
    }

    @Test func inferRequestIsOneFramedModelInferRequest() {
        let rows: [Float] = [1, -2, 0.5, 0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
        let encoded = rows.withUnsafeBufferPointer {
            InferenceCodec.inferRequest(model: "te", version: "2", rows: $0, rowCount: 2, featureCount: 8)
        }
        var input = Proto()
        input.string(1, "features")
        input.string(2, "FP32")
        input.bytes(3, [2, 8])  // packed int64 shape [2, 8]
        var output = Proto()
        output.string(1, "score")
        var request = Proto()
        request.string(1, "te")
        request.string(2, "2")
        request.bytes(5, input.bytes)
        request.bytes(6, output.bytes)
        request.bytes(7, floatBytes(rows))
        #expect(encoded == request.framed)
    }

    @Test func inferRequestCarriesParameters() {
        let rows = [Float](repeating: 0, count: 8)
        let encoded = rows.withUnsafeBufferPointer {
            InferenceCodec.inferRequest(
                model: "m", version: "1", rows: $0, rowCount: 1, featureCount: 8,
                parameters: [("delay_ms", .int64(300))])
        }
        var value = Proto()
        value.int(2, 300)  // int64_param = 2
        var entry = Proto()
        entry.string(1, "delay_ms")
        entry.bytes(2, value.bytes)
        var expectedField = Proto()
        expectedField.bytes(4, entry.bytes)
        // Field 4 comes after model_name (1) and model_version (2).
        let prefix: [UInt8] = [0x0a, 1, 0x6d, 0x12, 1, 0x31]
        #expect(Array(encoded[5..<(5 + prefix.count)]) == prefix)
        #expect(
            Array(encoded[(5 + prefix.count)..<(5 + prefix.count + expectedField.bytes.count)]) == expectedField.bytes)
    }

    private func inferResponse(scores: [Float], shape: [UInt8]) -> [UInt8] {
        var output = Proto()
        output.string(1, "score")
        output.string(2, "FP32")
        output.bytes(3, shape)
        var response = Proto()
        response.string(1, "trade_eligibility")
        response.string(2, "1")
        response.bytes(5, output.bytes)
        response.bytes(6, floatBytes(scores))
        return response.framed
    }

    @Test func scoresFromRawOutputContents() throws {
        let body = inferResponse(scores: [0.25, 0.75], shape: [2, 1])
        #expect(try InferenceCodec.scores(from: body, expectedCount: 2) == [0.25, 0.75])
    }

    @Test func scoresOfWrongSizeAreRejected() {
        let body = inferResponse(scores: [0.25, 0.75, 0.5], shape: [3, 1])
        #expect(throws: TritonError.self) { try InferenceCodec.scores(from: body, expectedCount: 2) }
    }

    @Test func garbageIsAProtocolViolation() {
        let body: [UInt8] = [0, 0, 0, 0, 3, 0xff, 0xff, 0xff]
        #expect(throws: TritonError.self) { try InferenceCodec.scores(from: body, expectedCount: 1) }
    }

    @Test func readyFlag() throws {
        var m = Proto()
        m.int(1, 1)
        #expect(try InferenceCodec.flag(from: m.framed))
        #expect(try !InferenceCodec.flag(from: Proto().framed))
    }

    @Test func modelConfigParametersPolicyAndUnknownFieldsSkipped() throws {
        var specific = Proto()
        specific.bytes(1, [1, 2])  // packed int64 versions [1, 2]
        var policy = Proto()
        policy.bytes(3, specific.bytes)
        var param = Proto()
        param.string(1, "abc123")
        var entry = Proto()
        entry.string(1, "artefact_sha256_v2")
        entry.bytes(2, param.bytes)
        var input = Proto()
        input.string(1, "features")
        input.int(2, 11)
        input.bytes(4, [8])
        var config = Proto()
        config.string(1, "trade_eligibility")
        config.bytes(3, policy.bytes)
        config.int(4, 256)
        config.bytes(5, input.bytes)
        config.bytes(7, [0x08, 0x02])  // instance_group: not in our subset, must be skipped
        config.bytes(14, entry.bytes)
        config.string(17, "python")
        var response = Proto()
        response.bytes(1, config.bytes)
        let decoded = try InferenceCodec.modelConfig(from: response.framed)
        #expect(decoded.name == "trade_eligibility")
        #expect(decoded.backend == "python")
        #expect(decoded.maxBatchSize == 256)
        #expect(decoded.versionPolicy == .specific([1, 2]))
        #expect(decoded.inputs == [ModelConfig.Tensor(name: "features", dataType: 11, dims: [8])])
        #expect(decoded.parameters == ["artefact_sha256_v2": "abc123"])
        #expect(decoded.artefactHash(version: "2") == "abc123")
        #expect(decoded.artefactHash(version: "1") == nil)
    }

    @Test func modelMetadata() throws {
        var t = Proto()
        t.string(1, "features")
        t.string(2, "FP32")
        t.bytes(3, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 8])  // [-1, 8]
        var m = Proto()
        m.string(1, "trade_eligibility")
        m.string(2, "1")
        m.string(2, "2")
        m.string(3, "python")
        m.bytes(4, t.bytes)
        let decoded = try InferenceCodec.modelMetadata(from: m.framed)
        #expect(decoded.name == "trade_eligibility")
        #expect(decoded.versions == ["1", "2"])
        #expect(decoded.inputs == [TensorMetadata(name: "features", datatype: "FP32", shape: [-1, 8])])
        #expect(decoded.outputs.isEmpty)
    }
}
