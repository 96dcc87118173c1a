// The `meanspot_fused._C` Python module. Importing it runs the static
// TORCH_LIBRARY registrations of every op in this library, which are then
// reached through torch.ops.meanspot_fused. Its only functions report and set
// the CPU kernels' instruction-set level (csrc/cpu/dispatch.cpp), which is not
// an op. Only the limited Python API is used, so one abi3 binary serves every
// CPython >= 3.9.
#include <Python.h>

#include <c10/util/Exception.h>

#include <string>
#include <vector>

#include "../cpu/dispatch.h"

namespace {

// Runs f, turning a C++ exception into a Python one (ValueError for a bad
// level name, as the ops raise it).
template <typename F>
PyObject* guarded(F f) {
  try {
    return f();
  } catch (const c10::ValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

PyObject* cpu_capability(PyObject*, PyObject*) {
  return guarded([] { return PyUnicode_FromString(meanspot::cpu::kernels().level); });
}

PyObject* cpu_capabilities(PyObject*, PyObject*) {
  return guarded([] {
    const std::vector<std::string> levels = meanspot::cpu::supported_levels();
    PyObject* list = PyList_New(0);
    for (const std::string& l : levels) {
      PyObject* s = PyUnicode_FromString(l.c_str());
      PyList_Append(list, s);
      Py_DECREF(s);
    }
    return list;
  });
}

PyObject* force_cpu_capability(PyObject*, PyObject* arg) {
  return guarded([arg]() -> PyObject* {
    // PyUnicode_AsUTF8AndSize joined the limited API only in 3.10.
    PyObject* bytes = PyUnicode_AsUTF8String(arg);
    if (bytes == nullptr) return nullptr;
    const std::string name = PyBytes_AsString(bytes);
    Py_DECREF(bytes);
    meanspot::cpu::force_level(name);
    Py_RETURN_NONE;
  });
}

PyMethodDef methods[] = {
    {"cpu_capability", cpu_capability, METH_NOARGS,
     "The instruction-set level of the CPU kernels in use: DEFAULT, AVX2 or AVX512."},
    {"cpu_capabilities", cpu_capabilities, METH_NOARGS,
     "The levels this build has and this CPU runs, lowest first (lower case)."},
    {"_force_cpu_capability", force_cpu_capability, METH_O,
     "Tests only: use this level for every later CPU op call of the process."},
    {nullptr, nullptr, 0, nullptr},
};

}  // namespace

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "Registers the meanspot_fused operators with torch.ops.meanspot_fused.",
      -1,  // no per-module state
      methods,
  };
  return PyModule_Create(&module_def);
}
}
