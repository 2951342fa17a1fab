import CProtobufC
import CTritonProto

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

#if _endian(big)
    #error("raw_input_contents/raw_output_contents are little-endian; this code copies host floats as they are")
#endif

/// A value of an inference request parameter (`InferParameter`'s oneof).
public enum InferParameterValue: Sendable, Equatable {
    case bool(Bool)
    case int64(Int64)
    case string(String)
    case double(Double)
    case uint64(UInt64)
}

/// What `ModelMetadata` reports about one tensor.
public struct TensorMetadata: Sendable, Equatable {
    public let name: String
    /// KServe datatype name, e.g. "FP32".
    public let datatype: String
    public let shape: [Int64]

    public init(name: String, datatype: String, shape: [Int64]) {
        self.name = name
        self.datatype = datatype
        self.shape = shape
    }
}

public struct ModelMetadata: Sendable, Equatable {
    public let name: String
    public let versions: [String]
    public let platform: String
    public let inputs: [TensorMetadata]
    public let outputs: [TensorMetadata]
}

public struct ModelConfig: Sendable, Equatable {
    public enum VersionPolicy: Sendable, Equatable {
        case unspecified
        case latest(count: Int)
        case all
        case specific([Int64])
    }
    public struct Tensor: Sendable, Equatable {
        public let name: String
        /// model_config.proto DataType value, e.g. 11 = TYPE_FP32.
        public let dataType: Int
        public let dims: [Int64]

        public init(name: String, dataType: Int, dims: [Int64]) {
            self.name = name
            self.dataType = dataType
            self.dims = dims
        }
    }
    public let name: String
    public let platform: String
    public let backend: String
    public let maxBatchSize: Int
    public let versionPolicy: VersionPolicy
    public let inputs: [Tensor]
    public let outputs: [Tensor]
    /// `parameters { key: … value { string_value: … } }` of config.pbtxt.
    public let parameters: [String: String]

    /// The artefact hash that `version` serves: parameter `artefact_sha256_v<version>` (see deploy/triton/README.md).
    public func artefactHash(version: String) -> String? {
        parameters["artefact_sha256_v\(version)"].flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// Encodes requests (gRPC-framed, one buffer each) and decodes responses with the protobuf-c generated code.
/// Pure: no I/O, unit-tested directly.
public enum InferenceCodec {
    /// A framed ModelInferRequest: input `features` FP32 [rowCount, featureCount] as raw_input_contents, output `score`.
    public static func inferRequest(
        model: String, version: String, rows: UnsafeBufferPointer<Float>, rowCount: Int, featureCount: Int,
        inputName: StaticString = "features", outputName: StaticString = "score",
        parameters: [(String, InferParameterValue)] = []
    ) -> [UInt8] {
        precondition(rows.count == rowCount * featureCount, "rows must hold rowCount × featureCount values")
        var request = Inference__ModelInferRequest()
        inference__model_infer_request__init(&request)
        var input = Inference__ModelInferRequest__InferInputTensor()
        inference__model_infer_request__infer_input_tensor__init(&input)
        var output = Inference__ModelInferRequest__InferRequestedOutputTensor()
        inference__model_infer_request__infer_requested_output_tensor__init(&output)
        var shape: (Int64, Int64) = (Int64(rowCount), Int64(featureCount))
        var raw = ProtobufCBinaryData(
            len: rows.count * MemoryLayout<Float>.size,
            data: UnsafeMutableRawPointer(mutating: rows.baseAddress)?.assumingMemoryBound(to: UInt8.self))

        return model.withCString { modelName in
            version.withCString { modelVersion in
                withUnsafeMutablePointer(to: &shape) { shapePointer in
                    withUnsafeMutablePointer(to: &raw) { rawPointer in
                        withUnsafeMutablePointer(to: &input) { inputPointer in
                            withUnsafeMutablePointer(to: &output) { outputPointer in
                                inputPointer.pointee.name = cString(inputName)
                                inputPointer.pointee.datatype = cString("FP32")
                                inputPointer.pointee.n_shape = 2
                                inputPointer.pointee.shape = UnsafeMutableRawPointer(shapePointer)
                                    .assumingMemoryBound(to: Int64.self)
                                outputPointer.pointee.name = cString(outputName)
                                var inputs: UnsafeMutablePointer<Inference__ModelInferRequest__InferInputTensor>? =
                                    inputPointer
                                var outputs:
                                    UnsafeMutablePointer<Inference__ModelInferRequest__InferRequestedOutputTensor>? =
                                        outputPointer
                                request.model_name = UnsafeMutablePointer(mutating: modelName)
                                request.model_version = UnsafeMutablePointer(mutating: modelVersion)
                                request.n_inputs = 1
                                request.n_outputs = 1
                                request.n_raw_input_contents = 1
                                request.raw_input_contents = rawPointer
                                return withUnsafeMutablePointer(to: &inputs) { inputsPointer in
                                    withUnsafeMutablePointer(to: &outputs) { outputsPointer in
                                        request.inputs = inputsPointer
                                        request.outputs = outputsPointer
                                        return withRequestParameters(parameters) { count, entries in
                                            request.n_parameters = count
                                            request.parameters = entries
                                            return frame(
                                                size: inference__model_infer_request__get_packed_size(&request)
                                            ) {
                                                inference__model_infer_request__pack(&request, $0)
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The request-level parameters map, built only when there is one (tests' `delay_ms`); C strings and entries
    /// live until `body` returns.
    private static func withRequestParameters<R>(
        _ parameters: [(String, InferParameterValue)],
        _ body: (Int, UnsafeMutablePointer<UnsafeMutablePointer<Inference__ModelInferRequest__ParametersEntry>?>?) -> R
    ) -> R {
        if parameters.isEmpty { return body(0, nil) }
        let n = parameters.count
        let entries = UnsafeMutablePointer<Inference__ModelInferRequest__ParametersEntry>.allocate(capacity: n)
        let values = UnsafeMutablePointer<Inference__InferParameter>.allocate(capacity: n)
        let pointers = UnsafeMutablePointer<UnsafeMutablePointer<Inference__ModelInferRequest__ParametersEntry>?>
            .allocate(capacity: n)
        var strings: [UnsafeMutablePointer<CChar>] = []
        defer {
            strings.forEach { free($0) }
            pointers.deallocate()
            values.deallocate()
            entries.deallocate()
        }
        for (i, (key, value)) in parameters.enumerated() {
            inference__model_infer_request__parameters_entry__init(entries + i)
            inference__infer_parameter__init(values + i)
            let keyCopy = strdup(key)!
            strings.append(keyCopy)
            entries[i].key = keyCopy
            switch value {
            case .bool(let b):
                values[i].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_BOOL_PARAM
                values[i].bool_param = b ? 1 : 0
            case .int64(let v):
                values[i].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_INT64_PARAM
                values[i].int64_param = v
            case .string(let s):
                let copy = strdup(s)!
                strings.append(copy)
                values[i].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_STRING_PARAM
                values[i].string_param = copy
            case .double(let v):
                values[i].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_DOUBLE_PARAM
                values[i].double_param = v
            case .uint64(let v):
                values[i].parameter_choice_case = INFERENCE__INFER_PARAMETER__PARAMETER_CHOICE_UINT64_PARAM
                values[i].uint64_param = v
            }
            entries[i].value = values + i
            pointers[i] = entries + i
        }
        return body(n, pointers)
    }

    /// A framed request whose message is {string name = 1; string version = 2;} — ModelReady, ModelMetadata and
    /// ModelConfig requests all have exactly this shape.
    public static func modelRequest(name: String, version: String) -> [UInt8] {
        var request = Inference__ModelReadyRequest()
        inference__model_ready_request__init(&request)
        return name.withCString { n in
            version.withCString { v in
                request.name = UnsafeMutablePointer(mutating: n)
                request.version = UnsafeMutablePointer(mutating: v)
                return frame(size: inference__model_ready_request__get_packed_size(&request)) {
                    inference__model_ready_request__pack(&request, $0)
                }
            }
        }
    }

    /// A framed empty message (ServerLiveRequest, ServerReadyRequest).
    public static func emptyRequest() -> [UInt8] { [0, 0, 0, 0, 0] }

    /// Scores from a ModelInferResponse body: output `score` as raw_output_contents (or fp32_contents), exactly
    /// `expectedCount` values.
    public static func scores(from body: [UInt8], expectedCount: Int) throws(TritonError) -> [Float] {
        let range = try GRPCFraming.singleMessage(in: body)
        let decoded: Result<[Float], TritonError> = body.withUnsafeBufferPointer { buffer in
            guard
                let response = inference__model_infer_response__unpack(
                    nil, range.count, buffer.baseAddress! + range.lowerBound)
            else { return .failure(undecodable("ModelInferResponse")) }
            defer { inference__model_infer_response__free_unpacked(response, nil) }
            let r = response.pointee
            guard r.n_outputs >= 1, let first = r.outputs[0] else {
                return .failure(TritonError(code: .protocolViolation, message: "ModelInferResponse has no outputs"))
            }
            var scores = [Float]()
            if r.n_raw_output_contents >= 1 {
                let raw = r.raw_output_contents[0]
                guard raw.len == expectedCount * MemoryLayout<Float>.size else {
                    return .failure(
                        TritonError(
                            code: .protocolViolation,
                            message:
                                "output \(String(cString: first.pointee.name)) has \(raw.len) bytes, expected \(expectedCount) FP32"
                        ))
                }
                scores = [Float](unsafeUninitializedCapacity: expectedCount) { out, count in
                    if expectedCount > 0 {
                        UnsafeMutableRawPointer(out.baseAddress!).copyMemory(from: raw.data, byteCount: raw.len)
                    }
                    count = expectedCount
                }
            } else if let contents = first.pointee.contents, contents.pointee.n_fp32_contents == expectedCount {
                scores = Array(UnsafeBufferPointer(start: contents.pointee.fp32_contents, count: expectedCount))
            } else {
                return .failure(
                    TritonError(
                        code: .protocolViolation,
                        message: "ModelInferResponse carries no FP32 data for \(expectedCount) rows"))
            }
            return .success(scores)
        }
        return try decoded.get()
    }

    /// `live`/`ready` of ServerLiveResponse, ServerReadyResponse or ModelReadyResponse (all `bool field = 1`).
    public static func flag(from body: [UInt8]) throws(TritonError) -> Bool {
        let range = try GRPCFraming.singleMessage(in: body)
        let value: Bool? = body.withUnsafeBufferPointer { buffer in
            guard
                let r = inference__model_ready_response__unpack(
                    nil, range.count, buffer.baseAddress! + range.lowerBound)
            else { return nil }
            defer { inference__model_ready_response__free_unpacked(r, nil) }
            return r.pointee.ready != 0
        }
        guard let value else { throw undecodable("ready/live response") }
        return value
    }

    public static func modelMetadata(from body: [UInt8]) throws(TritonError) -> ModelMetadata {
        let range = try GRPCFraming.singleMessage(in: body)
        let value: ModelMetadata? = body.withUnsafeBufferPointer { buffer in
            guard
                let r = inference__model_metadata_response__unpack(
                    nil, range.count, buffer.baseAddress! + range.lowerBound)
            else { return nil }
            defer { inference__model_metadata_response__free_unpacked(r, nil) }
            let m = r.pointee
            func tensors(
                _ n: Int,
                _ p: UnsafeMutablePointer<UnsafeMutablePointer<Inference__ModelMetadataResponse__TensorMetadata>?>?
            ) -> [TensorMetadata] {
                (0..<n).compactMap { i in
                    guard let t = p?[i]?.pointee else { return nil }
                    return TensorMetadata(
                        name: String(cString: t.name), datatype: String(cString: t.datatype),
                        shape: Array(UnsafeBufferPointer(start: t.shape, count: t.n_shape)))
                }
            }
            return ModelMetadata(
                name: String(cString: m.name),
                versions: (0..<m.n_versions).map { String(cString: m.versions[$0]!) },
                platform: String(cString: m.platform),
                inputs: tensors(m.n_inputs, m.inputs), outputs: tensors(m.n_outputs, m.outputs))
        }
        guard let value else { throw undecodable("ModelMetadataResponse") }
        return value
    }

    public static func modelConfig(from body: [UInt8]) throws(TritonError) -> ModelConfig {
        let range = try GRPCFraming.singleMessage(in: body)
        let value: ModelConfig? = body.withUnsafeBufferPointer { buffer in
            guard
                let r = inference__model_config_response__unpack(
                    nil, range.count, buffer.baseAddress! + range.lowerBound)
            else { return nil }
            defer { inference__model_config_response__free_unpacked(r, nil) }
            guard let c = r.pointee.config?.pointee else { return nil }
            var policy = ModelConfig.VersionPolicy.unspecified
            if let p = c.version_policy?.pointee {
                switch p.policy_choice_case {
                case INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_LATEST:
                    policy = .latest(count: Int(p.latest?.pointee.num_versions ?? 0))
                case INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_ALL:
                    policy = .all
                case INFERENCE__MODEL_VERSION_POLICY__POLICY_CHOICE_SPECIFIC:
                    let s = p.specific?.pointee
                    policy = .specific(Array(UnsafeBufferPointer(start: s?.versions, count: s?.n_versions ?? 0)))
                default:
                    policy = .unspecified
                }
            }
            let inputs: [ModelConfig.Tensor] = (0..<c.n_input).compactMap { i in
                guard let t = c.input[i]?.pointee else { return nil }
                return .init(
                    name: String(cString: t.name), dataType: Int(t.data_type.rawValue),
                    dims: Array(UnsafeBufferPointer(start: t.dims, count: t.n_dims)))
            }
            let outputs: [ModelConfig.Tensor] = (0..<c.n_output).compactMap { i in
                guard let t = c.output[i]?.pointee else { return nil }
                return .init(
                    name: String(cString: t.name), dataType: Int(t.data_type.rawValue),
                    dims: Array(UnsafeBufferPointer(start: t.dims, count: t.n_dims)))
            }
            var parameters: [String: String] = [:]
            for i in 0..<c.n_parameters {
                guard let e = c.parameters[i]?.pointee else { continue }
                parameters[String(cString: e.key)] = e.value.map { String(cString: $0.pointee.string_value) } ?? ""
            }
            return ModelConfig(
                name: String(cString: c.name), platform: String(cString: c.platform),
                backend: String(cString: c.backend),
                maxBatchSize: Int(c.max_batch_size), versionPolicy: policy, inputs: inputs, outputs: outputs,
                parameters: parameters)
        }
        guard let value else { throw undecodable("ModelConfigResponse") }
        return value
    }

    // MARK: helpers

    /// One buffer: 5-byte gRPC prefix then the packed message, written in place by `pack`.
    private static func frame(size: Int, _ pack: (UnsafeMutablePointer<UInt8>) -> Int) -> [UInt8] {
        var out = [UInt8](unsafeUninitializedCapacity: GRPCFraming.prefixLength + size) { buffer, count in
            let written = pack(buffer.baseAddress! + GRPCFraming.prefixLength)
            precondition(written == size, "protobuf-c packed \(written) bytes, announced \(size)")
            count = GRPCFraming.prefixLength + size
        }
        GRPCFraming.writePrefix(length: size, into: &out)
        return out
    }

    /// protobuf-c only reads the strings it packs; a StaticString is immortal, so lending it as `char *` is safe.
    private static func cString(_ s: StaticString) -> UnsafeMutablePointer<CChar> {
        UnsafeMutableRawPointer(mutating: s.utf8Start).assumingMemoryBound(to: CChar.self)
    }

    private static func undecodable(_ what: String) -> TritonError {
        TritonError(code: .protocolViolation, message: "could not decode \(what) (protobuf-c unpack failed)")
    }
}
