import os, sys, contextlib
from numba.core.dispatcher import Dispatcher

def _key(code):
    return os.path.basename(code.co_filename), code.co_name

def _codes():
    codes = set()
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith("fastnn"):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher):
                codes.add(_key(value.py_func.__code__))
    return codes

@contextlib.contextmanager
def counting():
    codes = _codes()
    seen = []
    def hook(frame, event, arg):
        if event == "call" and _key(frame.f_code) in codes:
            seen.append(frame.f_code.co_name)
    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(None)
