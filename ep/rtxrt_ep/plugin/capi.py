"""The slice of onnxruntime's C API the plugin provider calls, vendored as a checked table.

The Python wheel ships no headers. The C API structs (``OrtApi``, ``OrtEpApi``) only grow: a
function keeps its slot forever, new ones are appended per API version. So the table below
lists ``OrtApi``'s functions in slot order, one string per version as
``onnxruntime/core/session/onnxruntime_c_api.cc`` lays them out, and ``_check`` holds it to
the slot numbers onnxruntime itself asserts there (the last function of each version).
Functions are bound with the signatures of ``onnxruntime_c_api.h`` / ``onnxruntime_ep_c_api.h``.
``Api.load`` asks onnxruntime for API version ``API_VERSION`` and refuses an older runtime; the
structs the provider fills say ``STRUCT_VERSION``, the version whose members they hold."""
from __future__ import annotations

import ctypes as C
from typing import Any

API_VERSION = 24  # onnxruntime 1.24: TensorTypeAndShape_HasShape tells an unknown shape from a scalar's
STRUCT_VERSION = 23  # onnxruntime 1.23: the graph (Graph_*/Node_*/ValueInfo_*) and compile-EP APIs

_ORT_API = {
    1: """CreateStatus GetErrorCode GetErrorMessage CreateEnv CreateEnvWithCustomLogger EnableTelemetryEvents
       DisableTelemetryEvents CreateSession CreateSessionFromArray Run CreateSessionOptions SetOptimizedModelFilePath
       CloneSessionOptions SetSessionExecutionMode EnableProfiling DisableProfiling EnableMemPattern DisableMemPattern
       EnableCpuMemArena DisableCpuMemArena SetSessionLogId SetSessionLogVerbosityLevel SetSessionLogSeverityLevel
       SetSessionGraphOptimizationLevel SetIntraOpNumThreads SetInterOpNumThreads CreateCustomOpDomain
       CustomOpDomain_Add AddCustomOpDomain RegisterCustomOpsLibrary SessionGetInputCount SessionGetOutputCount
       SessionGetOverridableInitializerCount SessionGetInputTypeInfo SessionGetOutputTypeInfo
       SessionGetOverridableInitializerTypeInfo SessionGetInputName SessionGetOutputName
       SessionGetOverridableInitializerName CreateRunOptions RunOptionsSetRunLogVerbosityLevel
       RunOptionsSetRunLogSeverityLevel RunOptionsSetRunTag RunOptionsGetRunLogVerbosityLevel
       RunOptionsGetRunLogSeverityLevel RunOptionsGetRunTag RunOptionsSetTerminate RunOptionsUnsetTerminate
       CreateTensorAsOrtValue CreateTensorWithDataAsOrtValue IsTensor GetTensorMutableData FillStringTensor
       GetStringTensorDataLength GetStringTensorContent CastTypeInfoToTensorInfo GetOnnxTypeFromTypeInfo
       CreateTensorTypeAndShapeInfo SetTensorElementType SetDimensions GetTensorElementType GetDimensionsCount
       GetDimensions GetSymbolicDimensions GetTensorShapeElementCount GetTensorTypeAndShape GetTypeInfo GetValueType
       CreateMemoryInfo CreateCpuMemoryInfo CompareMemoryInfo MemoryInfoGetName MemoryInfoGetId MemoryInfoGetMemType
       MemoryInfoGetType AllocatorAlloc AllocatorFree AllocatorGetInfo GetAllocatorWithDefaultOptions
       AddFreeDimensionOverride GetValue GetValueCount CreateValue CreateOpaqueValue GetOpaqueValue
       KernelInfoGetAttribute_float KernelInfoGetAttribute_int64 KernelInfoGetAttribute_string
       KernelContext_GetInputCount KernelContext_GetOutputCount KernelContext_GetInput KernelContext_GetOutput
       ReleaseEnv ReleaseStatus ReleaseMemoryInfo ReleaseSession ReleaseValue ReleaseRunOptions ReleaseTypeInfo
       ReleaseTensorTypeAndShapeInfo ReleaseSessionOptions ReleaseCustomOpDomain""",
    2: """GetDenotationFromTypeInfo CastTypeInfoToMapTypeInfo CastTypeInfoToSequenceTypeInfo GetMapKeyType
       GetMapValueType GetSequenceElementType ReleaseMapTypeInfo ReleaseSequenceTypeInfo SessionEndProfiling
       SessionGetModelMetadata ModelMetadataGetProducerName ModelMetadataGetGraphName ModelMetadataGetDomain
       ModelMetadataGetDescription ModelMetadataLookupCustomMetadataMap ModelMetadataGetVersion ReleaseModelMetadata""",
    3: """CreateEnvWithGlobalThreadPools DisablePerSessionThreads CreateThreadingOptions ReleaseThreadingOptions
       ModelMetadataGetCustomMetadataMapKeys AddFreeDimensionOverrideByName""",
    4: "GetAvailableProviders ReleaseAvailableProviders",
    5: """GetStringTensorElementLength GetStringTensorElement FillStringTensorElement AddSessionConfigEntry
       CreateAllocator ReleaseAllocator RunWithBinding CreateIoBinding ReleaseIoBinding BindInput BindOutput
       BindOutputToDevice GetBoundOutputNames GetBoundOutputValues ClearBoundInputs ClearBoundOutputs TensorAt
       CreateAndRegisterAllocator SetLanguageProjection SessionGetProfilingStartTimeNs SetGlobalIntraOpNumThreads
       SetGlobalInterOpNumThreads SetGlobalSpinControl""",
    6: """AddInitializer CreateEnvWithCustomLoggerAndGlobalThreadPools SessionOptionsAppendExecutionProvider_CUDA
       SessionOptionsAppendExecutionProvider_ROCM SessionOptionsAppendExecutionProvider_OpenVINO
       SetGlobalDenormalAsZero CreateArenaCfg ReleaseArenaCfg""",
    7: """ModelMetadataGetGraphDescription SessionOptionsAppendExecutionProvider_TensorRT SetCurrentGpuDeviceId
       GetCurrentGpuDeviceId""",
    8: """KernelInfoGetAttributeArray_float KernelInfoGetAttributeArray_int64 CreateArenaCfgV2 AddRunConfigEntry
       CreatePrepackedWeightsContainer ReleasePrepackedWeightsContainer CreateSessionWithPrepackedWeightsContainer
       CreateSessionFromArrayWithPrepackedWeightsContainer""",
    9: """SessionOptionsAppendExecutionProvider_TensorRT_V2 CreateTensorRTProviderOptions UpdateTensorRTProviderOptions
       GetTensorRTProviderOptionsAsString ReleaseTensorRTProviderOptions EnableOrtCustomOps RegisterAllocator
       UnregisterAllocator IsSparseTensor CreateSparseTensorAsOrtValue FillSparseTensorCoo FillSparseTensorCsr
       FillSparseTensorBlockSparse CreateSparseTensorWithValuesAsOrtValue UseCooIndices UseCsrIndices
       UseBlockSparseIndices GetSparseTensorFormat GetSparseTensorValuesTypeAndShape GetSparseTensorValues
       GetSparseTensorIndicesTypeShape GetSparseTensorIndices""",
    10: """HasValue KernelContext_GetGPUComputeStream GetTensorMemoryInfo GetExecutionProviderApi
       SessionOptionsSetCustomCreateThreadFn SessionOptionsSetCustomThreadCreationOptions
       SessionOptionsSetCustomJoinThreadFn SetGlobalCustomCreateThreadFn SetGlobalCustomThreadCreationOptions
       SetGlobalCustomJoinThreadFn SynchronizeBoundInputs SynchronizeBoundOutputs""",
    11: """SessionOptionsAppendExecutionProvider_CUDA_V2 CreateCUDAProviderOptions UpdateCUDAProviderOptions
       GetCUDAProviderOptionsAsString ReleaseCUDAProviderOptions SessionOptionsAppendExecutionProvider_MIGraphX""",
    12: """AddExternalInitializers CreateOpAttr ReleaseOpAttr CreateOp InvokeOp ReleaseOp
       SessionOptionsAppendExecutionProvider CopyKernelInfo ReleaseKernelInfo""",
    13: """GetTrainingApi SessionOptionsAppendExecutionProvider_CANN CreateCANNProviderOptions UpdateCANNProviderOptions
       GetCANNProviderOptionsAsString ReleaseCANNProviderOptions""",
    14: """MemoryInfoGetDeviceType UpdateEnvWithCustomLogLevel SetGlobalIntraOpThreadAffinity RegisterCustomOpsLibrary_V2
       RegisterCustomOpsUsingFunction KernelInfo_GetInputCount KernelInfo_GetOutputCount KernelInfo_GetInputName
       KernelInfo_GetOutputName KernelInfo_GetInputTypeInfo KernelInfo_GetOutputTypeInfo KernelInfoGetAttribute_tensor
       HasSessionConfigEntry GetSessionConfigEntry""",
    15: """SessionOptionsAppendExecutionProvider_Dnnl CreateDnnlProviderOptions UpdateDnnlProviderOptions
       GetDnnlProviderOptionsAsString ReleaseDnnlProviderOptions KernelInfo_GetNodeName KernelInfo_GetLogger
       KernelContext_GetLogger Logger_LogMessage Logger_GetLoggingSeverityLevel KernelInfoGetConstantInput_tensor
       CastTypeInfoToOptionalTypeInfo GetOptionalContainedTypeInfo GetResizedStringTensorElementBuffer
       KernelContext_GetAllocator GetBuildInfoString""",
    16: """CreateROCMProviderOptions UpdateROCMProviderOptions GetROCMProviderOptionsAsString ReleaseROCMProviderOptions
       CreateAndRegisterAllocatorV2 RunAsync UpdateTensorRTProviderOptionsWithValue GetTensorRTProviderOptionsByName
       UpdateCUDAProviderOptionsWithValue GetCUDAProviderOptionsByName KernelContext_GetResource""",
    17: """SetUserLoggingFunction ShapeInferContext_GetInputCount ShapeInferContext_GetInputTypeShape
       ShapeInferContext_GetAttribute ShapeInferContext_SetOutputTypeShape SetSymbolicDimensions ReadOpAttr
       SetDeterministicCompute KernelContext_ParallelFor SessionOptionsAppendExecutionProvider_OpenVINO_V2""",
    18: """SessionOptionsAppendExecutionProvider_VitisAI KernelContext_GetScratchBuffer KernelInfoGetAllocator
       AddExternalInitializersFromFilesInMemory""",
    20: "CreateLoraAdapter CreateLoraAdapterFromArray ReleaseLoraAdapter RunOptionsAddActiveLoraAdapter SetEpDynamicOptions",
    22: """ReleaseValueInfo ReleaseNode ReleaseGraph ReleaseModel GetValueInfoName GetValueInfoTypeInfo GetModelEditorApi
       CreateTensorWithDataAndDeleterAsOrtValue SessionOptionsSetLoadCancellationFlag GetCompileApi
       CreateKeyValuePairs AddKeyValuePair GetKeyValue GetKeyValuePairs RemoveKeyValuePair ReleaseKeyValuePairs
       RegisterExecutionProviderLibrary UnregisterExecutionProviderLibrary GetEpDevices
       SessionOptionsAppendExecutionProvider_V2 SessionOptionsSetEpSelectionPolicy
       SessionOptionsSetEpSelectionPolicyDelegate HardwareDevice_Type HardwareDevice_VendorId HardwareDevice_Vendor
       HardwareDevice_DeviceId HardwareDevice_Metadata EpDevice_EpName EpDevice_EpVendor EpDevice_EpMetadata
       EpDevice_EpOptions EpDevice_Device GetEpApi""",
    23: """GetTensorSizeInBytes AllocatorGetStats CreateMemoryInfo_V2 MemoryInfoGetDeviceMemType MemoryInfoGetVendorId
       ValueInfo_GetValueProducer ValueInfo_GetValueNumConsumers ValueInfo_GetValueConsumers
       ValueInfo_GetInitializerValue ValueInfo_GetExternalInitializerInfo ValueInfo_IsRequiredGraphInput
       ValueInfo_IsOptionalGraphInput ValueInfo_IsGraphOutput ValueInfo_IsConstantInitializer
       ValueInfo_IsFromOuterScope Graph_GetName Graph_GetModelPath Graph_GetOnnxIRVersion Graph_GetNumOperatorSets
       Graph_GetOperatorSets Graph_GetNumInputs Graph_GetInputs Graph_GetNumOutputs Graph_GetOutputs
       Graph_GetNumInitializers Graph_GetInitializers Graph_GetNumNodes Graph_GetNodes Graph_GetParentNode
       Graph_GetGraphView Node_GetId Node_GetName Node_GetOperatorType Node_GetDomain Node_GetSinceVersion
       Node_GetNumInputs Node_GetInputs Node_GetNumOutputs Node_GetOutputs Node_GetNumImplicitInputs
       Node_GetImplicitInputs Node_GetNumAttributes Node_GetAttributes Node_GetAttributeByName
       OpAttr_GetTensorAttributeAsOrtValue OpAttr_GetType OpAttr_GetName Node_GetNumSubgraphs Node_GetSubgraphs
       Node_GetGraph Node_GetEpName ReleaseExternalInitializerInfo ExternalInitializerInfo_GetFilePath
       ExternalInitializerInfo_GetFileOffset ExternalInitializerInfo_GetByteSize GetRunConfigEntry
       EpDevice_MemoryInfo CreateSharedAllocator GetSharedAllocator ReleaseSharedAllocator GetTensorData
       GetSessionOptionsConfigEntries SessionGetMemoryInfoForInputs SessionGetMemoryInfoForOutputs
       SessionGetEpDeviceForInputs CreateSyncStreamForEpDevice SyncStream_GetHandle ReleaseSyncStream CopyTensors
       Graph_GetModelMetadata GetModelCompatibilityForEpDevices CreateExternalInitializerInfo""",
    24: "TensorTypeAndShape_HasShape",  # version 24's first function; the rest are not used
}
# The slot onnxruntime asserts for each version's last function (onnxruntime_c_api.cc); for
# version 24, the slot of the one function listed (offset 3120 in the 1.24 header's OrtApi).
_LAST_SLOT = {1: 101, 2: 118, 3: 124, 4: 126, 5: 149, 6: 157, 7: 161, 8: 169, 9: 191, 10: 203, 11: 209, 12: 218,
              13: 224, 14: 238, 15: 254, 16: 265, 17: 275, 18: 279, 20: 284, 22: 317, 23: 389, 24: 390}
# OrtEpApi slots (onnxruntime/core/session/plugin_ep/ep_api.cc): version 22 then 23.
_EP_API = "CreateEpDevice ReleaseEpDevice EpGraphSupportInfo_AddNodesToFuse EpGraphSupportInfo_AddSingleNode"
# OrtModelEditorApi's first slots (struct OrtModelEditorApi in onnxruntime_c_api.h, version 22).
_MODEL_EDITOR_API = """CreateTensorTypeInfo CreateSparseTensorTypeInfo CreateMapTypeInfo CreateSequenceTypeInfo
                       CreateOptionalTypeInfo CreateValueInfo CreateNode"""


def _slots() -> dict[str, int]:
    slots: dict[str, int] = {}
    for version, names in _ORT_API.items():
        for name in names.split():
            if name in slots:
                raise AssertionError(f"OrtApi table: {name} listed twice")
            slots[name] = len(slots)
        last = names.split()[-1]
        if slots[last] != _LAST_SLOT[version]:
            raise AssertionError(f"OrtApi table: {last} (end of version {version}) is in slot {slots[last]}, "
                                 f"onnxruntime asserts {_LAST_SLOT[version]}")
    return slots


SLOTS = _slots()
EP_SLOTS = {name: i for i, name in enumerate(_EP_API.split())}
MODEL_EDITOR_SLOTS = {name: i for i, name in enumerate(_MODEL_EDITOR_API.split())}

P, SIZE, I64 = C.c_void_p, C.c_size_t, C.c_int64
PP, PSIZE, PI64, PSTR = C.POINTER(C.c_void_p), C.POINTER(C.c_size_t), C.POINTER(C.c_int64), C.POINTER(C.c_char_p)
STATUS = P  # OrtStatus*: NULL is success

# name: (restype, argtypes), as in the headers (every pointer argument as void*).
_SIGNATURES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "CreateStatus": (P, (C.c_int, C.c_char_p)),
    "GetErrorMessage": (C.c_char_p, (P,)),
    "ReleaseStatus": (None, (P,)),
    "GetTensorMutableData": (STATUS, (P, PP)),
    "GetTensorTypeAndShape": (STATUS, (P, PP)),
    "GetTensorElementType": (STATUS, (P, C.POINTER(C.c_int))),
    "GetDimensionsCount": (STATUS, (P, PSIZE)),
    "TensorTypeAndShape_HasShape": (C.c_bool, (P,)),
    "GetDimensions": (STATUS, (P, PI64, SIZE)),
    "GetSymbolicDimensions": (STATUS, (P, PSTR, SIZE)),
    "ReleaseTensorTypeAndShapeInfo": (None, (P,)),
    "CastTypeInfoToTensorInfo": (STATUS, (P, PP)),
    "GetOnnxTypeFromTypeInfo": (STATUS, (P, C.POINTER(C.c_int))),
    "GetValueType": (STATUS, (P, C.POINTER(C.c_int))),
    "ReleaseValue": (None, (P,)),
    "GetTensorMemoryInfo": (STATUS, (P, PP)),
    "MemoryInfoGetDeviceType": (None, (P, C.POINTER(C.c_int))),
    "KernelContext_GetInputCount": (STATUS, (P, PSIZE)),
    "KernelContext_GetOutputCount": (STATUS, (P, PSIZE)),
    "KernelContext_GetInput": (STATUS, (P, SIZE, PP)),
    "KernelContext_GetOutput": (STATUS, (P, SIZE, PI64, SIZE, PP)),
    "ReadOpAttr": (STATUS, (P, C.c_int, P, SIZE, PSIZE)),
    "GetValueInfoName": (STATUS, (P, PSTR)),
    "GetValueInfoTypeInfo": (STATUS, (P, PP)),
    "CreateKeyValuePairs": (None, (PP,)),
    "AddKeyValuePair": (None, (P, C.c_char_p, C.c_char_p)),
    "GetKeyValuePairs": (None, (P, C.POINTER(PSTR), C.POINTER(PSTR), PSIZE)),
    "ReleaseKeyValuePairs": (None, (P,)),
    "HardwareDevice_Type": (C.c_int, (P,)),
    "HardwareDevice_VendorId": (C.c_uint32, (P,)),
    "GetEpApi": (P, ()),
    "GetTensorSizeInBytes": (STATUS, (P, PSIZE)),
    "ValueInfo_GetInitializerValue": (STATUS, (P, PP)),
    "Graph_GetName": (STATUS, (P, PSTR)),
    "Graph_GetOnnxIRVersion": (STATUS, (P, PI64)),
    "Graph_GetNumOperatorSets": (STATUS, (P, PSIZE)),
    "Graph_GetOperatorSets": (STATUS, (P, PSTR, PI64, SIZE)),
    "Graph_GetNumInputs": (STATUS, (P, PSIZE)),
    "Graph_GetInputs": (STATUS, (P, PP, SIZE)),
    "Graph_GetNumOutputs": (STATUS, (P, PSIZE)),
    "Graph_GetOutputs": (STATUS, (P, PP, SIZE)),
    "Graph_GetNumInitializers": (STATUS, (P, PSIZE)),
    "Graph_GetInitializers": (STATUS, (P, PP, SIZE)),
    "Graph_GetNumNodes": (STATUS, (P, PSIZE)),
    "Graph_GetNodes": (STATUS, (P, PP, SIZE)),
    "Node_GetName": (STATUS, (P, PSTR)),
    "Node_GetOperatorType": (STATUS, (P, PSTR)),
    "Node_GetDomain": (STATUS, (P, PSTR)),
    "Node_GetNumInputs": (STATUS, (P, PSIZE)),
    "Node_GetInputs": (STATUS, (P, PP, SIZE)),
    "Node_GetNumOutputs": (STATUS, (P, PSIZE)),
    "Node_GetOutputs": (STATUS, (P, PP, SIZE)),
    "Node_GetNumAttributes": (STATUS, (P, PSIZE)),
    "Node_GetAttributes": (STATUS, (P, PP, SIZE)),
    "OpAttr_GetTensorAttributeAsOrtValue": (STATUS, (P, PP)),
    "OpAttr_GetType": (STATUS, (P, C.POINTER(C.c_int))),
    "OpAttr_GetName": (STATUS, (P, PSTR)),
    "Node_GetNumSubgraphs": (STATUS, (P, PSIZE)),
    "GetTensorData": (STATUS, (P, PP)),
    "GetSessionOptionsConfigEntries": (STATUS, (P, PP)),
    "CreateOpAttr": (STATUS, (C.c_char_p, P, C.c_int, C.c_int, PP)),
    "ReleaseOpAttr": (None, (P,)),
    "GetModelEditorApi": (P, ()),
    "Graph_GetModelPath": (STATUS, (P, PSTR)),  # ORTCHAR_T is char except on Windows
}
_EP_SIGNATURES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "CreateEpDevice": (STATUS, (P, P, P, P, PP)),
    "EpGraphSupportInfo_AddNodesToFuse": (STATUS, (P, PP, SIZE, P)),
}
_MODEL_EDITOR_SIGNATURES: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "CreateNode": (STATUS, (C.c_char_p, C.c_char_p, C.c_char_p, PSTR, SIZE, PSTR, SIZE, PP, SIZE, PP)),
}

ORT_FAIL = 1
ORT_EP_FAIL = 11
ONNX_TYPE_TENSOR = 1
HARDWARE_CPU, HARDWARE_GPU = 0, 1
NVIDIA_VENDOR_ID = 0x10DE
ATTR_INT, ATTR_INTS, ATTR_FLOAT, ATTR_FLOATS, ATTR_STRING, ATTR_STRINGS, ATTR_GRAPH, ATTR_TENSOR = range(1, 9)


class OrtError(RuntimeError):
    """A non-NULL OrtStatus, with onnxruntime's message."""


class Api:
    """onnxruntime's OrtApi, OrtEpApi and OrtModelEditorApi, bound by name:
    ``api.Graph_GetName(graph, byref(name))`` returns what C returns; ``api.check(status)``
    raises OrtError for a failed status."""

    def __init__(self, ort_api: int, ep_api: int):
        self.ort_api = ort_api
        self._functions: dict[str, Any] = {}
        self._bind(ort_api, SLOTS, _SIGNATURES)
        self._bind(ep_api, EP_SLOTS, _EP_SIGNATURES)
        self._bind(self.GetModelEditorApi(), MODEL_EDITOR_SLOTS, _MODEL_EDITOR_SIGNATURES)

    def _bind(self, table: int, slots: dict[str, int], signatures: dict[str, tuple[Any, tuple[Any, ...]]]) -> None:
        pointers = C.cast(table, C.POINTER(C.c_void_p))
        for name, (restype, argtypes) in signatures.items():
            self._functions[name] = C.CFUNCTYPE(restype, *argtypes)(pointers[slots[name]])

    @classmethod
    def load(cls, api_base: int) -> Api:
        """From the OrtApiBase onnxruntime hands CreateEpFactories; OrtError when that
        onnxruntime is older than API_VERSION."""
        base = C.cast(api_base, C.POINTER(C.c_void_p))
        get_api = C.CFUNCTYPE(C.c_void_p, C.c_uint32)(base[0])
        version = C.CFUNCTYPE(C.c_char_p)(base[1])().decode()
        ort_api = get_api(API_VERSION)
        if not ort_api:
            raise OrtError(f"RtxrtExecutionProvider needs onnxruntime >= 1.{API_VERSION}; this is {version}")
        ep_api = C.CFUNCTYPE(C.c_void_p)(C.cast(ort_api, C.POINTER(C.c_void_p))[SLOTS["GetEpApi"]])()
        return cls(ort_api, ep_api)

    def addresses(self, names: list[str]) -> list[int]:
        """The OrtApi entries ``names`` as raw function addresses (for the C side)."""
        return [C.cast(self.ort_api, C.POINTER(C.c_void_p))[SLOTS[name]] for name in names]

    def __getattr__(self, name: str) -> Any:
        try:
            return self._functions[name]
        except KeyError:
            raise AttributeError(f"onnxruntime C function {name} is not in rtxrt_ep's table") from None

    def check(self, status: int | None) -> None:
        if status:
            message = self.GetErrorMessage(status).decode(errors="replace")
            self.ReleaseStatus(status)
            raise OrtError(message)

    def status(self, error: BaseException) -> int:
        """An OrtStatus for onnxruntime, from a Python exception (ORT_EP_FAIL)."""
        message = str(error) if str(error).startswith("RtxrtExecutionProvider") else f"RtxrtExecutionProvider: {error}"
        return self.CreateStatus(ORT_EP_FAIL, message.encode(errors="replace"))

    def string(self, getter: str, handle: int) -> str:
        """For the ``X_GetName(handle, const char** out)`` shape of getter."""
        out = C.c_char_p()
        self.check(getattr(self, getter)(handle, C.byref(out)))
        return (out.value or b"").decode()

    def handles(self, count_getter: str, getter: str, handle: int) -> list[int | None]:
        """For the ``X_GetNumY(h, &n)`` + ``X_GetY(h, array, n)`` pair; None for an absent entry
        (an optional input left out)."""
        count = C.c_size_t()
        self.check(getattr(self, count_getter)(handle, C.byref(count)))
        array = (C.c_void_p * count.value)()
        if count.value:
            self.check(getattr(self, getter)(handle, array, count.value))
        return list(array)

    def config_entries(self, session_options: int) -> dict[str, str]:
        kvps = C.c_void_p()
        self.check(self.GetSessionOptionsConfigEntries(session_options, C.byref(kvps)))
        try:
            return self.pairs(kvps)
        finally:
            self.ReleaseKeyValuePairs(kvps)

    def pairs(self, kvps: Any) -> dict[str, str]:
        keys, values, count = PSTR(), PSTR(), C.c_size_t()
        self.GetKeyValuePairs(kvps, C.byref(keys), C.byref(values), C.byref(count))
        return {keys[i].decode(): values[i].decode() for i in range(count.value)}

    def key_value_pairs(self, entries: dict[str, str]) -> C.c_void_p:
        """A new OrtKeyValuePairs (the caller releases it)."""
        kvps = C.c_void_p()
        self.CreateKeyValuePairs(C.byref(kvps))
        for key, value in entries.items():
            self.AddKeyValuePair(kvps, key.encode(), value.encode())
        return kvps


# --- the structs the provider implements (onnxruntime_ep_c_api.h) --------------------------------------
# Each begins with uint32_t ort_version_supported; the function pointers follow, 8-byte aligned.
# Slots after a struct's STRUCT_VERSION members are left out: onnxruntime reads only the members
# of the version a struct says it supports.

FACTORY_FIELDS = ("GetName", "GetVendor", "GetSupportedDevices", "CreateEp", "ReleaseEp", "GetVendorId", "GetVersion",
                  "ValidateCompiledModelCompatibilityInfo", "CreateAllocator", "ReleaseAllocator", "CreateDataTransfer",
                  "IsStreamAware", "CreateSyncStreamForDevice")
EP_FIELDS = ("GetName", "GetCapability", "Compile", "ReleaseNodeComputeInfos", "GetPreferredDataLayout",
             "ShouldConvertDataLayoutForOp", "SetDynamicOptions", "OnRunStart", "OnRunEnd", "CreateAllocator",
             "CreateSyncStreamForDevice", "GetCompiledModelCompatibilityInfo")
COMPUTE_INFO_FIELDS = ("CreateState", "Compute", "ReleaseState")


def struct_type(name: str, fields: tuple[str, ...]) -> type[C.Structure]:
    return type(name, (C.Structure,), {"_fields_": [("ort_version_supported", C.c_uint32)]
                                       + [(f, C.c_void_p) for f in fields]})


OrtEpFactory = struct_type("OrtEpFactory", FACTORY_FIELDS)
OrtEp = struct_type("OrtEp", EP_FIELDS)
OrtNodeComputeInfo = struct_type("OrtNodeComputeInfo", COMPUTE_INFO_FIELDS)


class OrtNodeFusionOptions(C.Structure):
    _fields_ = [("ort_version_supported", C.c_uint32), ("drop_constant_initializers", C.c_bool)]
