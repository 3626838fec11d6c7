/* The native face of rtxrt's ONNX Runtime plugin execution provider.
 *
 * onnxruntime loads a plugin EP as a shared library exporting CreateEpFactories and
 * ReleaseEpFactory. rtxrt's provider is Python (rtxrt_ep.plugin): this file only forwards
 * those two calls, a fused node's Compute (its tensors gathered first, by tensors.c) and the
 * release callbacks onnxruntime may make while the process exits, to function pointers that
 * Python installs with rtxrt_ep_attach (ctypes callbacks). It needs neither onnxruntime's nor
 * Python's headers.
 *
 * Once Python calls rtxrt_ep_detach (at interpreter exit), nothing here calls into Python:
 * releases become no-ops (the process is ending) and new factories are refused. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef void *(*create_factories_fn)(const char *, const void *, const void *, void **, size_t, size_t *);
typedef void *(*release_factory_fn)(void *);
typedef void (*release_ep_fn)(void *, void *);
typedef void (*release_infos_fn)(void *, void **, size_t);
typedef void (*release_state_fn)(void *, void *);
typedef void *(*compute_fn)(void *, void *, const int64_t *, size_t);

void *rtxrt_ep_gather_inputs(void *context, int64_t **words, size_t *used); /* tensors.c */
void *rtxrt_ep_status(const char *message);

/* OrtApiBase: {GetApi, GetVersionString}; OrtApi slot 0 is CreateStatus(code, message). */
typedef const void *const *(*get_api_fn)(uint32_t);
typedef void *(*create_status_fn)(int, const char *);
#define ORT_FAIL 1

static struct {
    create_factories_fn create_factories;
    release_factory_fn release_factory;
    release_ep_fn release_ep;
    release_infos_fn release_infos;
    release_state_fn release_state;
    compute_fn compute;
} python;
static volatile int attached;

void rtxrt_ep_attach(create_factories_fn create_factories, release_factory_fn release_factory,
                     release_ep_fn release_ep, release_infos_fn release_infos, release_state_fn release_state,
                     compute_fn compute) {
    python.create_factories = create_factories;
    python.release_factory = release_factory;
    python.release_ep = release_ep;
    python.release_infos = release_infos;
    python.release_state = release_state;
    python.compute = compute;
    attached = 1;
}

void rtxrt_ep_detach(void) { attached = 0; }

void *CreateEpFactories(const char *name, const void *api_base, const void *logger, void **factories,
                        size_t max_factories, size_t *num_factories) {
    if (attached)
        return python.create_factories(name, api_base, logger, factories, max_factories, num_factories);
    *num_factories = 0;
    get_api_fn get_api = *(const get_api_fn *)api_base;
    create_status_fn create_status = (create_status_fn)get_api(1)[0];
    return create_status(ORT_FAIL, "RtxrtExecutionProvider runs in a Python process: call rtxrt_ep.register() "
                                   "instead of loading this library directly");
}

void *ReleaseEpFactory(void *factory) { return attached ? python.release_factory(factory) : NULL; }

/* Placed in OrtEpFactory.ReleaseEp, OrtEp.ReleaseNodeComputeInfos and OrtNodeComputeInfo.ReleaseState. */
void rtxrt_ep_release_ep(void *factory, void *ep) {
    if (attached) python.release_ep(factory, ep);
}

void rtxrt_ep_release_node_compute_infos(void *ep, void **infos, size_t count) {
    if (attached) python.release_infos(ep, infos, count);
}

void rtxrt_ep_release_state(void *info, void *state) {
    if (attached) python.release_state(info, state);
}

/* OrtNodeComputeInfo.Compute: one Python call per run, with every input already packed. */
void *rtxrt_ep_compute(void *info, void *state, void *context) {
    if (!attached) return rtxrt_ep_status("RtxrtExecutionProvider: the Python interpreter has exited");
    int64_t *inputs;
    size_t words;
    void *status = rtxrt_ep_gather_inputs(context, &inputs, &words);
    if (status) return status;
    status = python.compute(info, context, inputs, words);
    free(inputs);
    return status;
}
