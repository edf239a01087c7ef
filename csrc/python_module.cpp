// The ops register themselves when this library is loaded (STABLE_TORCH_LIBRARY static
// initialisers); Python only needs a module init function to import it. Limited API only,
// so one abi3 wheel serves every CPython.
#include <Python.h>

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {  // exported: the rest is built -fvisibility=hidden
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
