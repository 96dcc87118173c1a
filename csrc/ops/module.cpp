// The `meanspot_fused._C` Python module. It holds no functions: importing it
// runs the static TORCH_LIBRARY registrations of every op in this library,
// which are then reached through torch.ops.meanspot_fused. Only the limited
// Python API is used, so one abi3 binary serves every CPython >= 3.9.
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "Registers the meanspot_fused operators with torch.ops.meanspot_fused.",
      -1,    // no per-module state
      nullptr,
  };
  return PyModule_Create(&module_def);
}
}
