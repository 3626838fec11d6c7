/* A fused node's tensors, in and out, without a Python call per tensor.
 *
 * Marshalling each input and output through ctypes cost tens of microseconds per run, so
 * Compute's per-tensor onnxruntime calls happen here: rtxrt_ep_gather_inputs packs every input
 * into one int64 array that Python reads at once, and rtxrt_ep_write_outputs creates every
 * output and copies rtxrt's results into it. The onnxruntime functions used are the OrtApi
 * entries named in rtxrt_ep_ort_functions, in that order; Python (capi.py holds the slot
 * table) installs their addresses with rtxrt_ep_bind_ort. No onnxruntime headers: every
 * handle is a void *, every enum an int. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

const char *const rtxrt_ep_ort_functions =
    "CreateStatus KernelContext_GetInputCount KernelContext_GetInput GetTensorMemoryInfo MemoryInfoGetDeviceType "
    "GetTensorTypeAndShape GetTensorElementType GetDimensionsCount GetDimensions ReleaseTensorTypeAndShapeInfo "
    "GetTensorMutableData KernelContext_GetOutput";

static struct {
    void *(*create_status)(int, const char *);
    void *(*get_input_count)(void *, size_t *);
    void *(*get_input)(void *, size_t, void **);
    void *(*get_memory_info)(void *, void **);
    void (*get_device_type)(void *, int *);
    void *(*get_type_and_shape)(void *, void **);
    void *(*get_element_type)(void *, int *);
    void *(*get_dimensions_count)(void *, size_t *);
    void *(*get_dimensions)(void *, int64_t *, size_t);
    void (*release_type_and_shape)(void *);
    void *(*get_mutable_data)(void *, void **);
    void *(*get_output)(void *, size_t, const int64_t *, size_t, void **);
} ort;

void rtxrt_ep_bind_ort(void *const *functions) { memcpy(&ort, functions, sizeof ort); }

void *rtxrt_ep_status(const char *message) { return ort.create_status(1 /* ORT_FAIL */, message); }

/* Appends one input as {data, element type, OrtMemoryInfoDeviceType, rank, dims...}. */
static void *gather_one(void *value, int64_t **words, size_t *used, size_t *capacity) {
    void *memory, *info, *data, *status;
    int device, element;
    size_t rank;
    if ((status = ort.get_memory_info(value, &memory))) return status;
    ort.get_device_type(memory, &device);
    if ((status = ort.get_type_and_shape(value, &info))) return status;
    if (!(status = ort.get_element_type(info, &element)) && !(status = ort.get_dimensions_count(info, &rank))) {
        if (*used + 4 + rank > *capacity) {
            size_t grown = 2 * (*used + 4 + rank);
            int64_t *larger = realloc(*words, grown * sizeof **words);
            if (!larger) status = rtxrt_ep_status("RtxrtExecutionProvider: out of host memory");
            else *words = larger, *capacity = grown;
        }
        if (!status) status = ort.get_dimensions(info, *words + *used + 4, rank);
    }
    ort.release_type_and_shape(info);
    if (status || (status = ort.get_mutable_data(value, &data))) return status;
    int64_t *entry = *words + *used;
    entry[0] = (int64_t)(intptr_t)data, entry[1] = element, entry[2] = device, entry[3] = (int64_t)rank;
    *used += 4 + rank;
    return NULL;
}

/* Every input of the kernel context, packed; on success the caller frees *words. */
void *rtxrt_ep_gather_inputs(void *context, int64_t **words, size_t *used) {
    size_t count, capacity = 64;
    void *status;
    *used = 0;
    if ((status = ort.get_input_count(context, &count))) return status;
    if (!(*words = malloc(capacity * sizeof **words))) return rtxrt_ep_status("RtxrtExecutionProvider: out of host memory");
    for (size_t i = 0; i < count && !status; i++) {
        void *value;
        if (!(status = ort.get_input(context, i, &value)))
            status = gather_one(value, words, used, &capacity);
    }
    if (status) free(*words);
    return status;
}

/* outputs: per output {source address, bytes, rank, dims...}, in the node's output order. */
void *rtxrt_ep_write_outputs(void *context, const int64_t *outputs, size_t count) {
    for (size_t i = 0; i < count; i++) {
        void *value, *data, *status;
        size_t bytes = (size_t)outputs[1], rank = (size_t)outputs[2];
        if ((status = ort.get_output(context, i, outputs + 3, rank, &value))) return status;
        if (bytes) {
            if ((status = ort.get_mutable_data(value, &data))) return status;
            memcpy(data, (const void *)(intptr_t)outputs[0], bytes);
        }
        outputs += 3 + rank;
    }
    return NULL;
}
