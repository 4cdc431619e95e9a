/* peeps._speedups: the automatic task factory's common path, spawn_tracked's record,
 * the thread locks' fast paths (ThreadLock's two, ThreadRLock's), asyncio Lock's and
 * Semaphore's (``async with`` and release) and the awaitable that lets their
 * ``async with`` skip coroutines (DONE), in C.
 *
 * Optional: built when a C compiler is there at install time, else peeps runs
 * the same logic in Python (_autotrack.PeepsTaskFactory.lean_function), which
 * stays the reference.  PEEPS_SPEEDUPS=0 switches this module off.
 *
 * A spawn under automatic tracking makes the task and stores on it
 *     task._peeps_spawn = (id(parent task) or 0, creation code or None,
 *                          creation instruction offset or -1, monotonic ns, None)
 * Everything else (the entity, the edges) is made from that record when the
 * task is first seen.  In Python the record costs a function's worth of
 * interpreter work per spawn (~4 k instructions on 3.11, a fifth of a plain
 * spawn); here it is a few hundred.
 *
 * ``record_spawn`` stores the same record for ``spawn_tracked``, with its meta.
 * ``lock_methods`` and ``rlock_methods`` give ThreadLock and ThreadRLock their
 * fast paths (see below).
 *
 * The factory object handles only the common case: peeps enabled, the
 * factory active, no eager registration, plain asyncio.Task, the running-task
 * dict available.  Anything else is passed, arguments unchanged, to the Python
 * factory it was made with.  An error while recording is handed to
 * ``on_error`` and the task is returned anyway; only the task's own
 * construction can raise, as it would without peeps.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>
#include <descrobject.h>
#include <time.h>

/* Frames: the creation site is the code and instruction offset of a caller's
 * frame.  The public API (PyEval_GetFrame, PyFrame_GetBack) makes a frame
 * object for every frame it returns, which the interpreter must later
 * deallocate (or hand its locals to): in the benchmark service, three frame
 * objects, ~1 k instructions and ~60 L1 instruction-cache misses a request
 * on 3.11.  On CPython 3.11-3.13 the interpreter's own frames are read
 * instead, as PyEval_GetFrame and PyFrame_GetBack find them (the first
 * complete frame, walking ``previous``), without making objects; elsewhere
 * (or built with -DPEEPS_PUBLIC_FRAMES) the public API is used.  A pframe
 * is borrowed: valid while the caller's frames are. */
#if !defined(PYPY_VERSION) && !defined(PEEPS_PUBLIC_FRAMES) \
    && PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000
#if defined(__has_include)
#if __has_include(<internal/pycore_frame.h>)
/* (A Python whose headers lack the internal ones keeps the public API.) */
#define PEEPS_RAW_FRAMES 1
#endif
#endif
#endif
#ifdef PEEPS_RAW_FRAMES
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
typedef _PyInterpreterFrame pframe;

static inline pframe *
pframe_complete(pframe *f)
{
    while (f != NULL && _PyFrame_IsIncomplete(f)) {
        f = f->previous;
    }
    return f;
}

/* The innermost Python frame of this thread, or NULL. */
static inline pframe *
pframe_current(void)
{
    PyThreadState *ts = PyThreadState_Get();
#if PY_VERSION_HEX >= 0x030D0000
    return pframe_complete(ts->current_frame);
#else
    return pframe_complete(ts->cframe->current_frame);
#endif
}

static inline pframe *
pframe_back(pframe *f)
{
    return pframe_complete(f->previous);
}

static inline PyCodeObject *
pframe_code(pframe *f)  /* borrowed */
{
#if PY_VERSION_HEX >= 0x030D0000
    return _PyFrame_GetCode(f);
#else
    return f->f_code;
#endif
}

/* What PyFrame_GetLasti returns: the offset in bytes, -1 before the first. */
static inline int
pframe_lasti(pframe *f)
{
    int lasti = _PyInterpreterFrame_LASTI(f);
    return lasti < 0 ? -1 : lasti * (int)sizeof(_Py_CODEUNIT);
}
#else
typedef PyFrameObject pframe;

static inline pframe *
pframe_current(void)
{
    return PyEval_GetFrame();  /* borrowed */
}

static inline pframe *
pframe_back(pframe *f)
{
    /* The frame object stays alive while its frame runs (the frame holds it). */
    PyFrameObject *back = PyFrame_GetBack(f);
    Py_XDECREF(back);
    return back;
}

static inline PyCodeObject *
pframe_code(pframe *f)  /* borrowed: the frame holds it */
{
    PyCodeObject *code = PyFrame_GetCode(f);
    Py_DECREF(code);
    return code;
}

static inline int
pframe_lasti(pframe *f)
{
    return PyFrame_GetLasti(f);
}
#endif

/* The frame that called the innermost Python frame (we are C, called from
 * that one: loop.create_task's or spawn_tracked's), or NULL. */
static inline pframe *
pframe_caller(void)
{
    pframe *frame = pframe_current();
    return frame != NULL ? pframe_back(frame) : NULL;
}
#ifdef __linux__
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#endif

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *state;          /* the PeepsTaskFactory (``peeps_factory``) */
    PyObject *fallback;       /* the Python lean factory: everything but the common case */
    PyObject *task_type;      /* asyncio.Task */
    PyObject *current_tasks;  /* asyncio.tasks._current_tasks (a dict) */
    PyObject *autotrack_ns;   /* _autotrack's globals: _register_eagerly, capture_sites */
    PyObject *tasks_ns;       /* _tasks' globals: cancel_origin */
    PyObject *config;         /* _config.STATE: .enabled */
    PyObject *asyncio_dir;    /* asyncio's directory, a str prefix */
    PyObject *monotonic_ns;   /* time.monotonic_ns */
    PyObject *on_error;       /* callable(exc): report a failed record */
    PyObject *last_site;      /* the last creation code outside asyncio, or NULL */
} Factory;

static PyObject *str_register_eagerly, *str_capture_sites, *str_cancel_origin,
    *str_active, *str_enabled, *str_peeps_spawn, *str_loop, *kw_loop, *kw_loop_context;

/* A module-level flag (a bool in a globals dict); -1 on error. */
static int
flag(PyObject *ns, PyObject *name)
{
    PyObject *value = PyDict_GetItemWithError(ns, name);  /* borrowed */
    if (value == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    return PyObject_IsTrue(value);
}

static int
attr_flag(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* 1: the common case, 0: hand over to the Python factory, -1: error. */
static int
common_case(Factory *self)
{
    int r;
    if ((r = flag(self->autotrack_ns, str_register_eagerly)) != 0) return r < 0 ? -1 : 0;
    if ((r = flag(self->tasks_ns, str_cancel_origin)) != 0) return r < 0 ? -1 : 0;
    if ((r = attr_flag(self->state, str_active)) != 1) return r;
    if ((r = attr_flag(self->config, str_enabled)) != 1) return r;
    return 1;
}

/* asyncio.Task(coro, loop=loop, **kwargs): args[0] is the loop, args[1] the coro. */
static PyObject *
make_task(Factory *self, PyObject *const *args, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *stack[8];
    if (nkw > 6) {  /* the caller checks the count first */
        PyErr_SetString(PyExc_SystemError, "peeps._speedups: too many keyword arguments");
        return NULL;
    }
    stack[0] = args[1];
    stack[1] = args[0];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        stack[2 + i] = args[2 + i];
    }
    PyObject *names;
    if (nkw == 0) {
        names = Py_NewRef(kw_loop);
    }
    else if (nkw == 1 && PyUnicode_CompareWithASCIIString(
                 PyTuple_GET_ITEM(kwnames, 0), "context") == 0) {
        names = Py_NewRef(kw_loop_context);
    }
    else {
        names = PyTuple_New(nkw + 1);
        if (names == NULL) {
            return NULL;
        }
        PyTuple_SET_ITEM(names, 0, Py_NewRef(str_loop));
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyTuple_SET_ITEM(names, i + 1, Py_NewRef(PyTuple_GET_ITEM(kwnames, i)));
        }
    }
    PyObject *task = PyObject_Vectorcall(self->task_type, stack, 1, names);
    Py_DECREF(names);
    return task;
}

/* The creation site: the frame that called loop.create_task (skipping
 * asyncio's own: asyncio.create_task, ensure_future, TaskGroup), as (code,
 * offset); (None, -1) when there is none.  New references in *code. */
static int
creation_site(Factory *self, PyObject **code, int *lasti)
{
    *code = NULL;
    *lasti = -1;
    /* The innermost Python frame is loop.create_task's (we are C). */
    pframe *site = pframe_caller();
    if (site == NULL) {
        return 0;
    }
    PyCodeObject *c = pframe_code(site);
    if ((PyObject *)c != self->last_site) {
        int tail = PyUnicode_Tailmatch(c->co_filename, self->asyncio_dir, 0,
                                       PY_SSIZE_T_MAX, -1);
        if (tail < 0) {
            return -1;
        }
        if (tail) {
            /* asyncio's own helper: the first frame outside asyncio, up to 4 out. */
            pframe *walk = site;
            for (int i = 0; i < 4; i++) {
                walk = pframe_back(walk);
                if (walk == NULL) {
                    break;
                }
                PyCodeObject *wc = pframe_code(walk);
                int in_asyncio = PyUnicode_Tailmatch(wc->co_filename, self->asyncio_dir, 0,
                                                     PY_SSIZE_T_MAX, -1);
                if (in_asyncio < 0) {
                    return -1;
                }
                if (!in_asyncio) {
                    c = wc;
                    site = walk;
                    break;
                }
            }
        }
        else {
            Py_XSETREF(self->last_site, Py_NewRef((PyObject *)c));
        }
    }
    *lasti = pframe_lasti(site);
    *code = Py_NewRef((PyObject *)c);
    return 0;
}

/* Monotonic ns as a C integer: on Linux CLOCK_MONOTONIC read directly (what
 * time.monotonic_ns() reads); elsewhere that function is called.  -1 on error. */
static long long
monotonic_ns_c(PyObject *fallback)
{
#if defined(__linux__)
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
        return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
#endif
    PyObject *now = PyObject_CallNoArgs(fallback);
    if (now == NULL) {
        return -1;
    }
    long long value = PyLong_AsLongLong(now);
    Py_DECREF(now);
    return value == -1 && PyErr_Occurred() ? -1 : value;
}

/* time.monotonic_ns() as an int object; NULL on error. */
static PyObject *
monotonic_ns(PyObject *fallback)
{
    long long now = monotonic_ns_c(fallback);
    return now == -1 ? NULL : PyLong_FromLongLong(now);
}

/* The spawn record itself: one object with C fields, read as the 5-tuple
 * (id(parent task) or 0, code or None, offset, monotonic ns, meta or None).
 * Python's readers index and unpack it (sq_item; iteration falls back to it),
 * so it stands in for the tuple the Python factory stores, without the tuple's
 * three integers: four allocations per spawn become one, and the integers are
 * made only when a snapshot reads a task that is still alive.
 *
 * It is not a GC type: a tuple of five comes from the tuple free list, which
 * does not count towards the collector's young-generation threshold, and a GC
 * object would (one more count per live task: a collection every ~700
 * allocations comes sooner).  So it holds nothing that could lead back to the
 * task -- a code object and C values -- and spawn_tracked's meta only when it
 * is empty (``tracked``: item 4 reads as a new ``{}``); a record with meta
 * stays the tuple. */
typedef struct {
    PyObject_HEAD
    void *parent;        /* the parent task's address (its id()), or NULL */
    PyObject *code;      /* the creation code, or NULL */
    long long created;   /* monotonic ns */
    int lasti;           /* instruction offset in code, or -1 */
    int tracked;         /* spawn_tracked's, with empty meta: item 4 is {} not None */
} Spawn;

static PyTypeObject SpawnType;

static Py_ssize_t
spawn_length(PyObject *self)
{
    return 5;
}

static PyObject *
spawn_item(PyObject *op, Py_ssize_t i)
{
    Spawn *self = (Spawn *)op;
    switch (i) {
    case 0:
        return self->parent == NULL ? PyLong_FromLong(0) : PyLong_FromVoidPtr(self->parent);
    case 1:
        return Py_NewRef(self->code != NULL ? self->code : Py_None);
    case 2:
        return PyLong_FromLong(self->lasti);
    case 3:
        return PyLong_FromLongLong(self->created);
    case 4:
        return self->tracked ? PyDict_New() : Py_NewRef(Py_None);
    default:
        PyErr_SetString(PyExc_IndexError, "spawn record index out of range");
        return NULL;
    }
}

static PyObject *
spawn_repr(PyObject *op)
{
    PyObject *tuple = PySequence_Tuple(op);
    if (tuple == NULL) {
        return NULL;
    }
    PyObject *repr = PyUnicode_FromFormat("SpawnRecord%R", tuple);
    Py_DECREF(tuple);
    return repr;
}

static void
spawn_dealloc(Spawn *self)
{
    Py_CLEAR(self->code);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PySequenceMethods spawn_as_sequence = {
    .sq_length = spawn_length,
    .sq_item = spawn_item,
};

static PyTypeObject SpawnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "peeps._speedups.SpawnRecord",
    .tp_basicsize = sizeof(Spawn),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .tp_doc = "A task's spawn record, read as the tuple (parent id or 0, code or None, "
              "offset, monotonic ns, meta or None).",
    .tp_as_sequence = &spawn_as_sequence,
    .tp_repr = spawn_repr,
    .tp_dealloc = (destructor)spawn_dealloc,
};

/* task._peeps_spawn = SpawnRecord(id(running task of loop) or 0, code or None,
 * offset, monotonic ns, meta), or the same 5-tuple when meta is not empty;
 * code and offset are given (code may be NULL). */
static int
store_spawn(PyObject *task, PyObject *current_tasks, PyObject *loop, PyObject *code,
            int lasti, PyObject *meta, PyObject *monotonic)
{
    PyObject *parent = PyDict_GetItemWithError(current_tasks, loop);  /* borrowed */
    if (parent == NULL && PyErr_Occurred()) {
        return -1;
    }
    long long now = monotonic_ns_c(monotonic);
    if (now == -1) {
        return -1;
    }
    PyObject *spawn;
    int empty = meta == Py_None || (PyDict_CheckExact(meta) && PyDict_GET_SIZE(meta) == 0);
    if (empty) {
        Spawn *record = PyObject_New(Spawn, &SpawnType);
        if (record == NULL) {
            return -1;
        }
        record->parent = parent;
        record->code = Py_XNewRef(code);
        record->created = now;
        record->lasti = lasti;
        record->tracked = meta != Py_None;
        spawn = (PyObject *)record;
    }
    else {
        /* meta may lead back to the task: a tuple, which the collector sees. */
        PyObject *parent_id = parent == NULL ? PyLong_FromLong(0) : PyLong_FromVoidPtr(parent);
        PyObject *offset = PyLong_FromLong(lasti);
        PyObject *created = PyLong_FromLongLong(now);
        spawn = NULL;
        if (parent_id != NULL && offset != NULL && created != NULL) {
            spawn = PyTuple_Pack(5, parent_id, code != NULL ? code : Py_None, offset, created,
                                 meta);
        }
        Py_XDECREF(parent_id);
        Py_XDECREF(offset);
        Py_XDECREF(created);
        if (spawn == NULL) {
            return -1;
        }
    }
    int rc = PyObject_SetAttr(task, str_peeps_spawn, spawn);
    Py_DECREF(spawn);
    return rc;
}

static int
record(Factory *self, PyObject *loop, PyObject *task)
{
    PyObject *code = NULL;
    int lasti = -1;
    int capture = flag(self->autotrack_ns, str_capture_sites);
    if (capture < 0 || (capture && creation_site(self, &code, &lasti) < 0)) {
        return -1;
    }
    int rc = store_spawn(task, self->current_tasks, loop, code, lasti, Py_None,
                         self->monotonic_ns);
    Py_XDECREF(code);
    return rc;
}

/* record_spawn(task, current_tasks, loop, meta, monotonic_ns): spawn_tracked's
 * record, its site the frame that called spawn_tracked (the innermost Python
 * frame is spawn_tracked's own: we are C).  Raises on error; the caller
 * reports it. */
static PyObject *
record_spawn(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyDict_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "record_spawn(task, current_tasks: dict, loop, meta, monotonic_ns)");
        return NULL;
    }
    PyObject *code = NULL;
    int lasti = -1;
    pframe *site = pframe_caller();
    if (site != NULL) {
        code = Py_NewRef((PyObject *)pframe_code(site));
        lasti = pframe_lasti(site);
    }
    int rc = store_spawn(args[0], args[1], args[2], code, lasti, args[3], args[4]);
    Py_XDECREF(code);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
factory_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Factory *self = (Factory *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    int common = (nargs == 2 && nkw <= 6) ? common_case(self) : 0;
    if (common < 0) {
        PyErr_Clear();  /* cannot tell: the Python factory decides */
        common = 0;
    }
    if (!common) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    PyObject *task = make_task(self, args, kwnames);
    if (task == NULL) {
        return NULL;
    }
    if (record(self, args[0], task) < 0) {
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
#else
        PyObject *type, *exc, *tb;
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL && exc != NULL) {
            PyException_SetTraceback(exc, tb);
        }
        Py_XDECREF(type);
        Py_XDECREF(tb);
        if (exc == NULL) {
            exc = Py_NewRef(Py_None);
        }
#endif
        PyObject *ret = PyObject_CallOneArg(self->on_error, exc);
        Py_DECREF(exc);
        if (ret == NULL) {
            PyErr_Clear();  /* never into the host */
        }
        Py_XDECREF(ret);
    }
    return task;
}

/* ---- ThreadLock's fast paths ----------------------------------------------
 *
 * Two pairs, as in _thread_locks.py, which stays the reference:
 * - tick-timed (a thread sampler times the holds): ThreadLock.acquire /
 *   ThreadLock.release, which read no clock;
 * - clocked (no sampler ticks): _clocked_acquire / _clocked_release, which
 *   time each hold with the clock unless a sampler's coarse clock
 *   (_threads.COARSE_NOW[0]) has started since.
 * acquire() with no arguments and release() / __exit__ are done here;
 * anything else (arguments to acquire, an unset slot, an object of another
 * layout) calls the Python method of the same pair.  The slots are read at
 * the offsets of ThreadLock's and HeldChain's member descriptors, found once
 * by lock_methods().
 */
static struct {
    PyTypeObject *lock_type;     /* ThreadLock */
    PyTypeObject *chain_type;    /* HeldChain */
    Py_ssize_t try_off, rel_off, acq_off, prev_off, owner_off, top_off;
    Py_ssize_t since_off, gen_off, total_off, max_off;  /* the clocked pair's */
    PyObject *local;             /* _lockdep._LOCAL */
    PyObject *chain_here;        /* _lockdep.chain_here */
    PyObject *nested;            /* _lockdep.nested */
    PyObject *unlink;            /* _lockdep.unlink */
    PyObject *py_acquire;        /* ThreadLock.acquire in Python */
    PyObject *py_release;        /* ThreadLock.release in Python */
    PyObject *py_clocked_acquire;  /* _thread_locks._clocked_acquire */
    PyObject *py_clocked_release;  /* _thread_locks._clocked_release */
    PyObject *coarse_now;        /* _threads.COARSE_NOW: a list, [0] set while ticks time */
    PyObject *monotonic;         /* time.monotonic_ns (read directly on Linux) */
    PyObject *str_chain, *str_acquire_contended, *one;
} L;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static PyObject *
python_method(PyObject *method, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *small[8];
    PyObject **stack = small;
    if (nargs + nkw + 1 > 8) {
        stack = PyMem_Malloc((nargs + nkw + 1) * sizeof(PyObject *));
        if (stack == NULL) {
            return PyErr_NoMemory();
        }
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
        stack[i + 1] = args[i];
    }
    PyObject *ret = PyObject_Vectorcall(method, stack, nargs + 1, kwnames);
    if (stack != small) {
        PyMem_Free(stack);
    }
    return ret;
}

static int
lock_layout_ok(PyObject *self)
{
    return L.lock_type != NULL && PyObject_TypeCheck(self, L.lock_type)
           && SLOT(self, L.try_off) != NULL && SLOT(self, L.acq_off) != NULL;
}

/* Whether a sampler's coarse clock runs (COARSE_NOW[0] is set): then the
 * ticks time holds and the clocked pair reads no clock.  1, 0, or -1 on error. */
static int
coarse_clock_runs(void)
{
    if (!PyList_Check(L.coarse_now) || PyList_GET_SIZE(L.coarse_now) < 1) {
        return 0;
    }
    return PyObject_IsTrue(PyList_GET_ITEM(L.coarse_now, 0));
}

/* A non-blocking acquire of the real lock: 1 taken, 0 not, -1 error. */
static int
try_take(PyObject *self)
{
    PyObject *got = PyObject_CallOneArg(SLOT(self, L.try_off), Py_False);
    if (got == NULL) {
        return -1;
    }
    int taken = PyObject_IsTrue(got);
    Py_DECREF(got);
    return taken;
}

/* Release the real lock: None, or NULL with its error. */
static PyObject *
release_real(PyObject *self)
{
    PyObject *ret = PyObject_CallNoArgs(SLOT(self, L.rel_off));
    if (ret == NULL) {
        return NULL;
    }
    Py_DECREF(ret);
    Py_RETURN_NONE;
}

/* The real lock was just taken (non-blocking): count it, note when the hold
 * started if ``clocked`` and no sampler ticks, and link the lock onto the
 * thread's chain.  Steals ``chain``; Py_True, or NULL with the real lock
 * released again. */
static PyObject *
took_lock(PyObject *self, PyObject *chain, int clocked)
{
    /* Count it and link the lock onto the thread's chain.  From here
     * on nothing may fail without undoing the acquire, so the count is
     * updated first and a failure there releases the real lock. */
    PyObject *count = PyNumber_Add(SLOT(self, L.acq_off), L.one);
    if (count == NULL) {
        /* Release the real lock with the error put aside (no Python call may
         * run with one set), then raise it. */
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *exc = PyErr_GetRaisedException();
        Py_XDECREF(release_real(self));
        PyErr_SetRaisedException(exc);
#else
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        Py_XDECREF(release_real(self));
        PyErr_Restore(type, value, tb);
#endif
        Py_DECREF(chain);
        return NULL;
    }
    Py_SETREF(SLOT(self, L.acq_off), count);
    if (clocked) {
        /* No sampler to time the hold: when it started, and which hold that is.
         * Nothing here may fail the acquire; a hold left untimed is harmless. */
        int ticks = coarse_clock_runs();
        PyObject *now = ticks == 0 ? monotonic_ns(L.monotonic) : NULL;
        if (now != NULL) {
            Py_XSETREF(SLOT(self, L.since_off), now);
            Py_XSETREF(SLOT(self, L.gen_off), Py_NewRef(count));
        }
        else if (PyErr_Occurred()) {
            PyErr_Clear();
        }
    }
    PyObject *top = SLOT(chain, L.top_off);
    if (top == NULL) {
        top = Py_None;
    }
    Py_INCREF(top);
    if (top != Py_None) {
        PyObject *stack[3] = {chain, top, self};
        PyObject *under = PyObject_Vectorcall(L.nested, stack, 3, NULL);
        Py_DECREF(top);
        if (under == NULL) {
            /* Lock-order bookkeeping failed: link onto the top as it was. */
            PyErr_Clear();
            under = Py_NewRef(SLOT(chain, L.top_off) ? SLOT(chain, L.top_off) : Py_None);
        }
        top = under;
    }
    Py_XSETREF(SLOT(self, L.prev_off), top);  /* steals top */
    Py_XSETREF(SLOT(chain, L.top_off), Py_NewRef(self));
    Py_XSETREF(SLOT(self, L.owner_off), chain);  /* steals chain */
    Py_RETURN_TRUE;
}

/* Both acquires; ``clocked``: also note when the hold started (the clocked pair). */
static PyObject *
acquire_fast(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
             int clocked)
{
    PyObject *python = clocked ? L.py_clocked_acquire : L.py_acquire;
    if (nargs != 0 || kwnames != NULL || !lock_layout_ok(self)) {
        return python_method(python, self, args, nargs, kwnames);
    }
    PyObject *chain = PyObject_GetAttr(L.local, L.str_chain);
    if (chain == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear();
        chain = PyObject_CallNoArgs(L.chain_here);
        if (chain == NULL) {
            return NULL;
        }
    }
    if (!Py_IS_TYPE(chain, L.chain_type)) {
        Py_DECREF(chain);
        return python_method(python, self, args, nargs, kwnames);
    }
    int taken = try_take(self);
    if (taken < 0) {
        Py_DECREF(chain);
        return NULL;
    }
    if (!taken) {
        /* Contended: the Python slow path (waiters, lock order, timing). */
        PyObject *stack[3] = {self, chain, NULL};
        PyObject *timeout = PyLong_FromLong(-1);
        if (timeout == NULL) {
            Py_DECREF(chain);
            return NULL;
        }
        stack[2] = timeout;
        PyObject *ret = PyObject_VectorcallMethod(L.str_acquire_contended, stack, 3, NULL);
        Py_DECREF(timeout);
        Py_DECREF(chain);
        return ret;
    }
    return took_lock(self, chain, clocked);
}

/* The clocked release's hold timing: add the hold that ends now to the
 * totals, if this lock knows when it started.  Never fails the release. */
static void
time_hold(PyObject *self)
{
    PyObject *gen = SLOT(self, L.gen_off), *acq = SLOT(self, L.acq_off);
    PyObject *since = SLOT(self, L.since_off), *total = SLOT(self, L.total_off);
    PyObject *max = SLOT(self, L.max_off);
    if (gen == NULL || acq == NULL || since == NULL || total == NULL || max == NULL
        || coarse_clock_runs() != 0) {
        PyErr_Clear();
        return;
    }
    int same = PyObject_RichCompareBool(gen, acq, Py_EQ);
    if (same != 1) {
        PyErr_Clear();
        return;
    }
    PyObject *clock = monotonic_ns(L.monotonic);
    if (clock == NULL) {
        PyErr_Clear();
        return;
    }
    long long now = PyLong_AsLongLong(clock);
    Py_DECREF(clock);
    long long start = PyLong_AsLongLong(since);
    long long sum = PyLong_AsLongLong(total);
    long long longest = PyLong_AsLongLong(max);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return;
    }
    long long held = now - start;
    PyObject *new_total = PyLong_FromLongLong(sum + held);
    if (new_total == NULL) {
        PyErr_Clear();
        return;
    }
    Py_SETREF(SLOT(self, L.total_off), new_total);
    if (held > longest) {
        PyObject *new_max = PyLong_FromLongLong(held);
        if (new_max == NULL) {
            PyErr_Clear();
            return;
        }
        Py_SETREF(SLOT(self, L.max_off), new_max);
    }
}

/* Clear the lock's holder and take it off ``chain`` (borrowed), where it is
 * linked.  Never fails. */
static void
unlink_held(PyObject *self, PyObject *chain)
{
    Py_INCREF(chain);
    Py_XSETREF(SLOT(self, L.owner_off), Py_NewRef(Py_None));
    if (SLOT(chain, L.top_off) == self) {
        PyObject *prev = SLOT(self, L.prev_off);
        Py_XSETREF(SLOT(chain, L.top_off), Py_NewRef(prev != NULL ? prev : Py_None));
    }
    else {
        PyObject *stack[2] = {chain, self};
        PyObject *ret = PyObject_Vectorcall(L.unlink, stack, 2, NULL);
        if (ret == NULL) {
            PyErr_Clear();  /* the chain repairs itself at the next nested acquire */
        }
        Py_XDECREF(ret);
    }
    Py_DECREF(chain);
}

/* Both releases; ``clocked``: also time the hold (the clocked pair). */
static PyObject *
release_fast(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
             int clocked)
{
    PyObject *python = clocked ? L.py_clocked_release : L.py_release;
    if (nargs > 3 || kwnames != NULL || !lock_layout_ok(self) || SLOT(self, L.rel_off) == NULL) {
        return python_method(python, self, args, nargs, kwnames);
    }
    PyObject *chain = SLOT(self, L.owner_off);
    if (chain != NULL && chain != Py_None) {
        if (!Py_IS_TYPE(chain, L.chain_type)) {
            return python_method(python, self, args, nargs, kwnames);
        }
        if (clocked) {
            time_hold(self);
        }
        unlink_held(self, chain);
    }
    return release_real(self);
}

static PyObject *
lock_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return acquire_fast(self, args, nargs, kwnames, 0);
}

static PyObject *
lock_release(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return release_fast(self, args, nargs, kwnames, 0);
}

static PyObject *
lock_clocked_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return acquire_fast(self, args, nargs, kwnames, 1);
}

static PyObject *
lock_clocked_release(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    return release_fast(self, args, nargs, kwnames, 1);
}

static PyMethodDef lock_acquire_def = {
    "acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_FASTCALL | METH_KEYWORDS,
    "acquire($self, /, blocking=True, timeout=-1)\n--\n\n"
    "ThreadLock.acquire, fast path in C (see _thread_locks.ThreadLock.acquire)"};
static PyMethodDef lock_release_def = {
    "release", (PyCFunction)(void (*)(void))lock_release, METH_FASTCALL | METH_KEYWORDS,
    "release($self, /, exc_type=None, exc=None, tb=None)\n--\n\n"
    "ThreadLock.release, fast path in C (see _thread_locks.ThreadLock.release)"};
static PyMethodDef lock_clocked_acquire_def = {
    "acquire", (PyCFunction)(void (*)(void))lock_clocked_acquire, METH_FASTCALL | METH_KEYWORDS,
    "acquire($self, /, blocking=True, timeout=-1)\n--\n\n"
    "ThreadLock.acquire without a sampler, in C (see _thread_locks._clocked_acquire)"};
static PyMethodDef lock_clocked_release_def = {
    "release", (PyCFunction)(void (*)(void))lock_clocked_release, METH_FASTCALL | METH_KEYWORDS,
    "release($self, /, exc_type=None, exc=None, tb=None)\n--\n\n"
    "ThreadLock.release without a sampler, in C (see _thread_locks._clocked_release)"};

static int
member_offset(PyObject *type, const char *name, Py_ssize_t *off)
{
    PyObject *descr = PyObject_GetAttrString(type, name);
    if (descr == NULL) {
        return -1;
    }
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)
        || ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
        Py_DECREF(descr);
        PyErr_Format(PyExc_TypeError, "%s is not a slot", name);
        return -1;
    }
    *off = ((PyMemberDescrObject *)descr)->d_member->offset;
    Py_DECREF(descr);
    return 0;
}

/* lock_methods(ThreadLock, HeldChain, local, chain_here, nested, unlink,
 *              py_acquire, py_release, py_clocked_acquire, py_clocked_release,
 *              coarse_now, monotonic_ns)
 *   -> (acquire, release, clocked acquire, clocked release) method descriptors */
/* A tuple of method descriptors on ``type``, one per def. */
static PyObject *
descriptors(PyObject *type, PyMethodDef **defs, Py_ssize_t n)
{
    PyObject *methods = PyTuple_New(n);
    if (methods == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *method = PyDescr_NewMethod((PyTypeObject *)type, defs[i]);
        if (method == NULL) {
            Py_DECREF(methods);
            return NULL;
        }
        PyTuple_SET_ITEM(methods, i, method);
    }
    return methods;
}

static PyObject *
lock_methods(PyObject *module, PyObject *args)
{
    PyObject *lock_type, *chain_type, *local, *chain_here, *nested, *unlink, *py_acquire,
        *py_release, *py_clocked_acquire, *py_clocked_release, *coarse_now, *monotonic;
    if (!PyArg_ParseTuple(args, "O!O!OOOOOOOOO!O:lock_methods", &PyType_Type, &lock_type,
                          &PyType_Type, &chain_type, &local, &chain_here, &nested, &unlink,
                          &py_acquire, &py_release, &py_clocked_acquire, &py_clocked_release,
                          &PyList_Type, &coarse_now, &monotonic)) {
        return NULL;
    }
    Py_ssize_t offs[10];
    if (member_offset(lock_type, "_try", &offs[0]) < 0
        || member_offset(lock_type, "_rel", &offs[1]) < 0
        || member_offset(lock_type, "_peeps_acquisitions", &offs[2]) < 0
        || member_offset(lock_type, "_lockdep_prev", &offs[3]) < 0
        || member_offset(lock_type, "_owner", &offs[4]) < 0
        || member_offset(chain_type, "top", &offs[5]) < 0
        || member_offset(lock_type, "_since", &offs[6]) < 0
        || member_offset(lock_type, "_since_gen", &offs[7]) < 0
        || member_offset(lock_type, "_peeps_hold_total_ns", &offs[8]) < 0
        || member_offset(lock_type, "_peeps_hold_max_ns", &offs[9]) < 0) {
        return NULL;
    }
    if (L.str_chain == NULL) {
        L.str_chain = PyUnicode_InternFromString("chain");
        L.str_acquire_contended = PyUnicode_InternFromString("_acquire_contended");
        L.one = PyLong_FromLong(1);
        if (L.str_chain == NULL || L.str_acquire_contended == NULL || L.one == NULL) {
            return NULL;
        }
    }
    PyMethodDef *defs[4] = {&lock_acquire_def, &lock_release_def, &lock_clocked_acquire_def,
                            &lock_clocked_release_def};
    PyObject *methods = descriptors(lock_type, defs, 4);
    if (methods == NULL) {
        return NULL;
    }
    Py_XSETREF(L.lock_type, (PyTypeObject *)Py_NewRef(lock_type));
    Py_XSETREF(L.chain_type, (PyTypeObject *)Py_NewRef(chain_type));
    L.try_off = offs[0];
    L.rel_off = offs[1];
    L.acq_off = offs[2];
    L.prev_off = offs[3];
    L.owner_off = offs[4];
    L.top_off = offs[5];
    L.since_off = offs[6];
    L.gen_off = offs[7];
    L.total_off = offs[8];
    L.max_off = offs[9];
    Py_XSETREF(L.local, Py_NewRef(local));
    Py_XSETREF(L.chain_here, Py_NewRef(chain_here));
    Py_XSETREF(L.nested, Py_NewRef(nested));
    Py_XSETREF(L.unlink, Py_NewRef(unlink));
    Py_XSETREF(L.py_acquire, Py_NewRef(py_acquire));
    Py_XSETREF(L.py_release, Py_NewRef(py_release));
    Py_XSETREF(L.py_clocked_acquire, Py_NewRef(py_clocked_acquire));
    Py_XSETREF(L.py_clocked_release, Py_NewRef(py_clocked_release));
    Py_XSETREF(L.coarse_now, Py_NewRef(coarse_now));
    Py_XSETREF(L.monotonic, Py_NewRef(monotonic));
    return methods;
}

/* ---- ThreadRLock's fast path ----------------------------------------------
 *
 * ThreadRLock.acquire / release / __exit__ in _thread_locks.py stay the
 * reference.  Its slots are ThreadLock's (both are _Exclusive's) plus
 * _count.  Done here: acquire() with no arguments when the holder re-enters
 * or the lock is free, and release() / __exit__ by the holder.  Anything else
 * (arguments, contention, a release by a thread that does not hold it, which
 * raises) calls the Python method.  One pair for both clocks: like the Python
 * methods, these test COARSE_NOW each time.  Set up by rlock_methods(),
 * after lock_methods().
 */
static struct {
    PyTypeObject *type;          /* ThreadRLock */
    Py_ssize_t count_off;
    PyObject *py_acquire;        /* ThreadRLock.acquire in Python */
    PyObject *py_release;        /* ThreadRLock.release in Python */
    PyObject *zero;
} R;

static int
rlock_layout_ok(PyObject *self)
{
    return R.type != NULL && PyObject_TypeCheck(self, R.type)
           && SLOT(self, L.try_off) != NULL && SLOT(self, L.acq_off) != NULL
           && SLOT(self, L.rel_off) != NULL && SLOT(self, R.count_off) != NULL;
}

/* The calling thread's chain (new reference), or NULL: with an error set on
 * failure, without one when the thread has none yet. */
static PyObject *
chain_if_any(void)
{
    PyObject *chain = PyObject_GetAttr(L.local, L.str_chain);
    if (chain == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
    }
    return chain;
}

static PyObject *
rlock_acquire(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0 || kwnames != NULL || !rlock_layout_ok(self)) {
        return python_method(R.py_acquire, self, args, nargs, kwnames);
    }
    PyObject *chain = chain_if_any();
    if (chain == NULL || !Py_IS_TYPE(chain, L.chain_type)) {
        /* No chain yet (the Python method makes one), or an error. */
        Py_XDECREF(chain);
        return PyErr_Occurred() ? NULL : python_method(R.py_acquire, self, args, 0, NULL);
    }
    if (SLOT(self, L.owner_off) == chain) {
        /* The holder again: only the count. */
        Py_DECREF(chain);
        PyObject *count = PyNumber_Add(SLOT(self, R.count_off), L.one);
        if (count == NULL) {
            return NULL;
        }
        Py_SETREF(SLOT(self, R.count_off), count);
        Py_RETURN_TRUE;
    }
    int taken = try_take(self);
    if (taken <= 0) {
        /* Held by another thread: the Python method waits (waiters, lock
         * order, timing) and tries again itself. */
        Py_DECREF(chain);
        return taken < 0 ? NULL : python_method(R.py_acquire, self, args, 0, NULL);
    }
    PyObject *ret = took_lock(self, chain, 1);
    if (ret != NULL) {
        Py_SETREF(SLOT(self, R.count_off), Py_NewRef(L.one));
    }
    return ret;
}

static PyObject *
rlock_release_fast(PyObject *self)
{
    if (!rlock_layout_ok(self)) {
        return PyObject_CallOneArg(R.py_release, self);
    }
    PyObject *chain = chain_if_any();
    if (chain == NULL || SLOT(self, L.owner_off) != chain || !Py_IS_TYPE(chain, L.chain_type)) {
        /* Not the holder: the Python method raises RuntimeError. */
        Py_XDECREF(chain);
        return PyErr_Occurred() ? NULL : PyObject_CallOneArg(R.py_release, self);
    }
    PyObject *count = PyNumber_Subtract(SLOT(self, R.count_off), L.one);
    if (count == NULL) {
        Py_DECREF(chain);
        return NULL;
    }
    int more = PyObject_IsTrue(count);
    if (more != 0) {
        Py_DECREF(chain);
        if (more < 0) {
            Py_DECREF(count);
            return NULL;
        }
        Py_SETREF(SLOT(self, R.count_off), count);  /* still held */
        Py_RETURN_NONE;
    }
    Py_DECREF(count);
    Py_SETREF(SLOT(self, R.count_off), Py_NewRef(R.zero));
    time_hold(self);
    unlink_held(self, chain);
    Py_DECREF(chain);
    return release_real(self);
}

static PyObject *
rlock_release(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs != 0 || kwnames != NULL) {
        return python_method(R.py_release, self, args, nargs, kwnames);  /* its TypeError */
    }
    return rlock_release_fast(self);
}

static PyObject *
rlock_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "__exit__ expected 3 arguments, got %zd", nargs);
        return NULL;
    }
    return rlock_release_fast(self);
}

static PyMethodDef rlock_acquire_def = {
    "acquire", (PyCFunction)(void (*)(void))rlock_acquire, METH_FASTCALL | METH_KEYWORDS,
    "acquire($self, /, blocking=True, timeout=-1)\n--\n\n"
    "ThreadRLock.acquire, fast path in C (see _thread_locks.ThreadRLock.acquire)"};
static PyMethodDef rlock_release_def = {
    "release", (PyCFunction)(void (*)(void))rlock_release, METH_FASTCALL | METH_KEYWORDS,
    "release($self, /)\n--\n\n"
    "ThreadRLock.release, fast path in C (see _thread_locks.ThreadRLock.release)"};
static PyMethodDef rlock_exit_def = {
    "__exit__", (PyCFunction)(void (*)(void))rlock_exit, METH_FASTCALL,
    "__exit__($self, exc_type, exc, tb, /)\n--\n\n"
    "ThreadRLock.__exit__, fast path in C (see _thread_locks.ThreadRLock.__exit__)"};

/* rlock_methods(ThreadRLock, py_acquire, py_release) -> (acquire, release,
 * __exit__) method descriptors; after lock_methods(), whose slot offsets
 * ThreadRLock must share. */
static PyObject *
rlock_methods(PyObject *module, PyObject *args)
{
    PyObject *rlock_type, *py_acquire, *py_release;
    if (!PyArg_ParseTuple(args, "O!OO:rlock_methods", &PyType_Type, &rlock_type, &py_acquire,
                          &py_release)) {
        return NULL;
    }
    if (L.lock_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "rlock_methods() needs lock_methods() first");
        return NULL;
    }
    Py_ssize_t offs[11], count_off;
    const char *names[11] = {"_try", "_rel", "_peeps_acquisitions", "_lockdep_prev", "_owner",
                             "_since", "_since_gen", "_peeps_hold_total_ns",
                             "_peeps_hold_max_ns", NULL, NULL};
    Py_ssize_t want[9] = {L.try_off, L.rel_off, L.acq_off, L.prev_off, L.owner_off,
                          L.since_off, L.gen_off, L.total_off, L.max_off};
    for (int i = 0; names[i] != NULL; i++) {
        if (member_offset(rlock_type, names[i], &offs[i]) < 0) {
            return NULL;
        }
        if (offs[i] != want[i]) {
            PyErr_Format(PyExc_TypeError, "ThreadRLock's %s is not ThreadLock's slot", names[i]);
            return NULL;
        }
    }
    if (member_offset(rlock_type, "_count", &count_off) < 0) {
        return NULL;
    }
    PyMethodDef *defs[3] = {&rlock_acquire_def, &rlock_release_def, &rlock_exit_def};
    PyObject *methods = descriptors(rlock_type, defs, 3);
    if (methods == NULL) {
        return NULL;
    }
    if (R.zero == NULL && (R.zero = PyLong_FromLong(0)) == NULL) {
        Py_DECREF(methods);
        return NULL;
    }
    Py_XSETREF(R.type, (PyTypeObject *)Py_NewRef(rlock_type));
    R.count_off = count_off;
    Py_XSETREF(R.py_acquire, Py_NewRef(py_acquire));
    Py_XSETREF(R.py_release, Py_NewRef(py_release));
    return methods;
}

static PyObject *
factory_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"state", "fallback", "task_type", "current_tasks", "autotrack_ns",
                             "tasks_ns", "config", "asyncio_dir", "monotonic_ns", "on_error",
                             NULL};
    PyObject *state, *fallback, *task_type, *current_tasks, *autotrack_ns, *tasks_ns, *config,
        *asyncio_dir, *monotonic_ns, *on_error;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOO!O!O!OUOO:TaskFactory", kwlist, &state,
                                     &fallback, &task_type, &PyDict_Type, &current_tasks,
                                     &PyDict_Type, &autotrack_ns, &PyDict_Type, &tasks_ns,
                                     &config, &asyncio_dir, &monotonic_ns, &on_error)) {
        return NULL;
    }
    Factory *self = (Factory *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = factory_vectorcall;
    self->state = Py_NewRef(state);
    self->fallback = Py_NewRef(fallback);
    self->task_type = Py_NewRef(task_type);
    self->current_tasks = Py_NewRef(current_tasks);
    self->autotrack_ns = Py_NewRef(autotrack_ns);
    self->tasks_ns = Py_NewRef(tasks_ns);
    self->config = Py_NewRef(config);
    self->asyncio_dir = Py_NewRef(asyncio_dir);
    self->monotonic_ns = Py_NewRef(monotonic_ns);
    self->on_error = Py_NewRef(on_error);
    self->last_site = NULL;
    return (PyObject *)self;
}

static int
factory_traverse(Factory *self, visitproc visit, void *arg)
{
    Py_VISIT(self->state);
    Py_VISIT(self->fallback);
    Py_VISIT(self->task_type);
    Py_VISIT(self->current_tasks);
    Py_VISIT(self->autotrack_ns);
    Py_VISIT(self->tasks_ns);
    Py_VISIT(self->config);
    Py_VISIT(self->asyncio_dir);
    Py_VISIT(self->monotonic_ns);
    Py_VISIT(self->on_error);
    Py_VISIT(self->last_site);
    return 0;
}

static int
factory_clear(Factory *self)
{
    Py_CLEAR(self->state);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->task_type);
    Py_CLEAR(self->current_tasks);
    Py_CLEAR(self->autotrack_ns);
    Py_CLEAR(self->tasks_ns);
    Py_CLEAR(self->config);
    Py_CLEAR(self->asyncio_dir);
    Py_CLEAR(self->monotonic_ns);
    Py_CLEAR(self->on_error);
    Py_CLEAR(self->last_site);
    return 0;
}

static void
factory_dealloc(Factory *self)
{
    PyObject_GC_UnTrack(self);
    factory_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMemberDef factory_members[] = {
    {"peeps_factory", T_OBJECT, offsetof(Factory, state), READONLY,
     "the PeepsTaskFactory this factory belongs to"},
    {"fallback", T_OBJECT, offsetof(Factory, fallback), READONLY,
     "the Python factory for everything but the common case"},
    {NULL},
};

static PyTypeObject FactoryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "peeps._speedups.TaskFactory",
    .tp_doc = "peeps' automatic task factory, common case in C (see _autotrack).",
    .tp_basicsize = sizeof(Factory),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Factory, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = factory_new,
    .tp_dealloc = (destructor)factory_dealloc,
    .tp_traverse = (traverseproc)factory_traverse,
    .tp_clear = (inquiry)factory_clear,
    .tp_members = factory_members,
};


#ifdef __linux__
/* -- the thread sampler's quiet sleep -------------------------------------------
 *
 * quiet_sleep(interval_ns, max_pace, stretch_ns, waker_fd, threshold_ns, sink)
 *     -> (quiet ticks' monotonic ns, woken)
 *
 * The thread sampler's sleep between two ticks, which goes on, without the GIL,
 * for as long as no other thread of the process runs.  After the first sleep
 * (``interval_ns``) it reads the process's CPU clock and this thread's own.
 * If the other threads together have surely used no more than ``threshold_ns``
 * of CPU since the call began (the reads' own error, up to the length of the
 * process read, counts as quiet), nothing else ran: no thread's stack or CPU
 * clock can have changed, and a Python tick would only repeat every thread's
 * last sample.  So the ticks a sampler at the full rate would have taken since
 * the last are quiet ticks: their times are recorded (the sleep cut into
 * intervals), the next sleep is twice as long (up to ``max_pace`` intervals),
 * and it looks again.  It returns for a real tick after the first look that
 * finds other threads ran, after ``stretch_ns`` of quiet ticks, or at once
 * when ``waker_fd`` (-1: none) becomes readable (``woken``: the sampler is
 * stopping).  Before returning, with the GIL, it hands the quiet ticks to
 * ``sink`` (the sampler's ``_add_quiet_ticks``; None: no one) and takes them
 * out of quiet_pending()'s list.
 *
 * Why: waking a Python thread and ticking over 100 parked threads costs
 * hundreds of microseconds of CPU on a VM (the GIL, the eval loop, caches gone
 * cold during the sleep); a quiet tick costs the C wake-up and three clock
 * reads.  The doubling is the loop-driven sampler's quiet pace (_threads.py,
 * MAX_QUIET_PACE) for a process whose threads are all parked.
 */
#define QUIET_MAX 512

/* The quiet ticks of the sleep in progress (monotonic ns), for snapshots taken
 * meanwhile: the sleeping thread appends without the GIL and publishes the
 * count after the time; quiet_pending() reads with the GIL.  Reset and emptied
 * only with the GIL held, so a reader never sees them change under it. */
static long long pending[QUIET_MAX];
static int pending_n;
/* Quiet ticks taken in this process, those in progress included. */
static unsigned long long quiet_total;

/* A child of fork() has no sleeping sampler: none of its parent's quiet ticks. */
static void
quiet_forget_in_child(void)
{
    pending_n = 0;
}

static PyObject *
quiet_count(PyObject *module, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&quiet_total, __ATOMIC_RELAXED));
}

static PyObject *
quiet_pending(PyObject *module, PyObject *unused)
{
    int n = __atomic_load_n(&pending_n, __ATOMIC_ACQUIRE);
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        PyObject *t = PyLong_FromLongLong(pending[i]);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, t);
    }
    return list;
}

static long long
clock_ns(clockid_t id)
{
    struct timespec t;
    if (clock_gettime(id, &t) != 0) {
        return -1;
    }
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The other threads' CPU: the process's clock less this thread's, read on both
 * sides of it.  The process read itself takes this thread's CPU (up to 100+ us
 * on cold caches), so the others' is between process - after (``*low``) and
 * process - before (``*high``).  Returns -1 when a clock cannot be read. */
static int
others_cpu_ns(long long *low, long long *high)
{
    long long before = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    long long process = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    long long after = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    if (before < 0 || process < 0 || after < 0) {
        return -1;
    }
    *low = process - after;
    *high = process - before;
    return 0;
}

static PyObject *
quiet_sleep(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "quiet_sleep expected 6 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *sink = args[5];
    long long interval_ns = PyLong_AsLongLong(args[0]);
    long max_pace = PyLong_AsLong(args[1]);
    long long stretch_ns = PyLong_AsLongLong(args[2]);
    long waker_fd_l = PyLong_AsLong(args[3]);
    long long threshold_ns = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (interval_ns < 0 || interval_ns > 10000000000LL) {
        PyErr_SetString(PyExc_ValueError, "quiet_sleep: interval_ns must be 0..10 s");
        return NULL;
    }
    if (waker_fd_l < -1 || waker_fd_l > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "quiet_sleep: waker_fd must be a file descriptor or -1");
        return NULL;
    }
    int waker_fd = (int)waker_fd_l;
    if (max_pace < 1) {
        max_pace = 1;
    }
    if (max_pace > 64) {
        max_pace = 64;
    }
    int quiet = 0, woken = 0;
    __atomic_store_n(&pending_n, 0, __ATOMIC_RELEASE);  /* another sampler's, stopped */
    Py_BEGIN_ALLOW_THREADS
    long long start_low = 0, start_high = 0;
    int no_clock = others_cpu_ns(&start_low, &start_high);
    long long start = clock_ns(CLOCK_MONOTONIC);
    long long last = start;
    long long sleep_ns = interval_ns;
    struct pollfd pfd = {waker_fd, POLLIN, 0};
    for (;;) {
        struct timespec ts = {(time_t)(sleep_ns / 1000000000LL), (long)(sleep_ns % 1000000000LL)};
        int r = ppoll(waker_fd >= 0 ? &pfd : NULL, waker_fd >= 0 ? 1 : 0, &ts, NULL);
        if (r > 0) {
            woken = 1;
            break;
        }
        if (r < 0 || no_clock || start < 0 || quiet >= QUIET_MAX || interval_ns <= 0) {
            break;  /* a signal (EINTR), no clock, or no interval to pace by: a real tick */
        }
        long long low, high;
        if (others_cpu_ns(&low, &high) || low - start_high > threshold_ns) {
            break;  /* another thread surely ran: a real tick */
        }
        long long now = clock_ns(CLOCK_MONOTONIC);
        /* The ticks a sampler at the full rate would have taken since the last
         * one: nothing ran in between, so each would have found what the
         * last real tick found. */
        long long elapsed = now - last;
        long long n = interval_ns > 0 ? (elapsed + interval_ns / 2) / interval_ns : 1;
        if (n < 1) {
            n = 1;
        }
        if (n > QUIET_MAX - quiet) {
            n = QUIET_MAX - quiet;
        }
        for (long long j = 1; j <= n; j++) {
            pending[quiet++] = last + elapsed * j / n;
        }
        __atomic_fetch_add(&quiet_total, (unsigned long long)n, __ATOMIC_RELAXED);
        last = now;
        __atomic_store_n(&pending_n, quiet, __ATOMIC_RELEASE);
        if (now - start >= stretch_ns) {
            break;  /* quiet for the whole stretch: a real tick now and then */
        }
        sleep_ns *= 2;
        if (sleep_ns > interval_ns * max_pace) {
            sleep_ns = interval_ns * max_pace;
        }
        if (sleep_ns > stretch_ns - (now - start)) {
            sleep_ns = stretch_ns - (now - start);
        }
    }
    Py_END_ALLOW_THREADS
    /* With the GIL: quiet_pending() lists the ticks until the sink (Python)
     * has taken them, so a snapshot in between may count a tick twice, never
     * miss one. */
    PyObject *list = PyList_New(quiet);
    PyObject *res = NULL;
    if (list != NULL) {
        int i;
        for (i = 0; i < quiet; i++) {
            PyObject *t = PyLong_FromLongLong(pending[i]);
            if (t == NULL) {
                break;
            }
            PyList_SET_ITEM(list, i, t);
        }
        if (i == quiet && (quiet == 0 || sink == Py_None || (res = PyObject_CallOneArg(sink, list)) != NULL)) {
            Py_XDECREF(res);
            res = Py_BuildValue("(OO)", list, woken ? Py_True : Py_False);
        }
        else {
            res = NULL;
        }
        Py_DECREF(list);
    }
    __atomic_store_n(&pending_n, 0, __ATOMIC_RELEASE);
    return res;
}
#endif

/* ---- An awaitable that is already done ----------------------------------
 *
 * ``async with`` on peeps' asyncio Lock and Semaphore: their ``__aenter__`` and
 * ``__aexit__`` are plain functions that take or give back the primitive at
 * once when nobody waits and return this object, which completes the ``await``
 * with None without suspending.  The stdlib's are coroutines (three per
 * ``async with lock``: ``__aenter__``, ``acquire``, ``__aexit__``), each one
 * allocated, started and finished.  One immutable instance, ``DONE``, serves
 * every await: its ``__await__`` is itself, an iterator that stops at once.
 */
typedef struct {
    PyObject_HEAD
} Done;

static PyObject *
done_self(PyObject *self)
{
    return Py_NewRef(self);
}

/* __next__: stop at once with no value, i.e. StopIteration(None). */
static PyObject *
done_next(PyObject *self)
{
    return NULL;
}

static PySendResult
done_am_send(PyObject *self, PyObject *arg, PyObject **result)
{
    *result = Py_NewRef(Py_None);
    return PYGEN_RETURN;
}

static PyObject *
done_send(PyObject *self, PyObject *arg)
{
    PyErr_SetNone(PyExc_StopIteration);
    return NULL;
}

/* throw(exc) or throw(type[, value[, tb]]): nothing is suspended here, so the
 * exception goes straight back to the caller, as a finished coroutine's would. */
static PyObject *
done_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    PyObject *typ = args[0];
    PyObject *val = nargs > 1 ? args[1] : Py_None;
    if (PyExceptionInstance_Check(typ)) {
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    } else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    } else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must be classes or instances deriving from BaseException");
    }
    return NULL;
}

static PyObject *
done_close(PyObject *self, PyObject *unused)
{
    Py_RETURN_NONE;
}

static PyMethodDef done_methods[] = {
    {"send", done_send, METH_O, "send(value): stop at once (StopIteration(None))"},
    {"throw", (PyCFunction)(void (*)(void))done_throw, METH_FASTCALL,
     "throw(exc): raise exc, as a finished coroutine would"},
    {"close", done_close, METH_NOARGS, "close(): nothing to close"},
    {NULL, NULL, 0, NULL},
};

static PyAsyncMethods done_as_async = {
    .am_await = done_self,
    .am_send = done_am_send,
};

static PyTypeObject DoneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "peeps._speedups.Done",
    .tp_basicsize = sizeof(Done),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .tp_doc = "An awaitable that is already done: ``await DONE`` is None at once.",
    .tp_as_async = &done_as_async,
    .tp_iter = done_self,
    .tp_iternext = done_next,
    .tp_methods = done_methods,
};

static Done done_instance = {PyObject_HEAD_INIT(&DoneType)};

/* ---- asyncio Lock's and Semaphore's fast paths ----------------------------
 *
 * _sync.Lock and _sync.Semaphore keep what these read and write in
 * __slots__ (the stdlib's _locked / _value and _waiters, which its
 * __init__ sets there too, and peeps' holder bookkeeping), so they are read
 * at fixed offsets, found once by aio_methods().  Done here: ``async with``'s
 * enter when the primitive is free and nobody waits, its exit, and
 * release() when the running task gives back what it took.  Anything else --
 * a wait, an unset slot, a BoundedSemaphore's release (its bound check), a
 * permit given back by a task that did not take it -- calls the Python
 * function of the same name in _sync.py, which stays the reference
 * (PEEPS_SPEEDUPS=0 runs it alone).  The stdlib's counterparts run Python
 * code too (three coroutines per ``async with lock``); these run none.
 */
static struct {
    PyTypeObject *lock_type, *sem_type, *bounded_type;
    Py_ssize_t l_locked, l_waiters, l_holder, l_since, l_acq, l_loop;
    Py_ssize_t s_value, s_waiters, s_holding, s_extra, s_acq, s_loop;
    PyObject *current_task;    /* asyncio.current_task where it is C (3.12+), or NULL */
    PyObject *current_tasks;   /* 3.11: asyncio.tasks._current_tasks (loop -> task) */
    PyObject *current_holder;  /* _tasks.current_holder */
    PyObject *monotonic;       /* time.monotonic_ns (read directly on Linux) */
    PyObject *py_lock_enter, *py_lock_release, *py_sem_enter, *py_sem_release;
    PyObject *str_wait, *str_running_task, *str_wake_first, *str_wake_next, *str_unhold;
    PyObject *one;
} A;

/* What runs now, as _sync's inlined current_holder(): the running task, else
 * whatever current_holder() says (the thread's entity, or None).  On 3.11 the
 * loop the primitive last saw (``loop_off``) is looked up in the running-task
 * dict, as _Identity._peeps_running_task does.  New reference, or NULL. */
static PyObject *
running_holder(PyObject *self, Py_ssize_t loop_off)
{
    if (A.current_task != NULL) {
        PyObject *task = PyObject_CallNoArgs(A.current_task);
        if (task == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_RuntimeError)) {
                return NULL;
            }
            PyErr_Clear();  /* no running loop: a thread */
        }
        else if (task != Py_None) {
            return task;
        }
        Py_XDECREF(task);
        return PyObject_CallNoArgs(A.current_holder);
    }
    PyObject *loop = SLOT(self, loop_off);
    if (loop != NULL && loop != Py_None) {
        PyObject *task = PyDict_GetItemWithError(A.current_tasks, loop);
        if (task != NULL && task != Py_None) {
            return Py_NewRef(task);
        }
        if (PyErr_Occurred()) {
            return NULL;
        }
    }
    return PyObject_CallMethodNoArgs(self, A.str_running_task);
}

/* ``slot`` + 1, stored back; never fails the caller (a count left as it was). */
static void
count_up(PyObject *self, Py_ssize_t off)
{
    PyObject *count = SLOT(self, off);
    PyObject *more = count != NULL ? PyNumber_Add(count, A.one) : NULL;
    if (more == NULL) {
        PyErr_Clear();
        return;
    }
    Py_SETREF(SLOT(self, off), more);
}

/* Whether ``waiters`` (the stdlib's deque, or None until a first wait) holds
 * anyone: 1, 0, -1 on error. */
static int
anyone_waits(PyObject *waiters)
{
    if (waiters == Py_None) {
        return 0;
    }
    return PyObject_IsTrue(waiters);
}

static int
aio_lock_ok(PyObject *self)
{
    return A.lock_type != NULL && PyObject_TypeCheck(self, A.lock_type)
           && SLOT(self, A.l_locked) != NULL && SLOT(self, A.l_waiters) != NULL
           && SLOT(self, A.l_acq) != NULL && SLOT(self, A.l_loop) != NULL;
}

/* Lock.__aenter__: take the lock now if it is free and nobody waits (the
 * stdlib's fast path) and return DONE; else the wait, _peeps_wait(). */
static PyObject *
aio_lock_enter(PyObject *self, PyObject *unused)
{
    if (!aio_lock_ok(self)) {
        return PyObject_CallOneArg(A.py_lock_enter, self);
    }
    int busy = PyObject_IsTrue(SLOT(self, A.l_locked));
    if (busy == 0) {
        busy = anyone_waits(SLOT(self, A.l_waiters));
    }
    if (busy != 0) {
        return busy < 0 ? NULL : PyObject_CallMethodNoArgs(self, A.str_wait);
    }
    PyObject *holder = running_holder(self, A.l_loop);
    if (holder == NULL) {
        return NULL;
    }
    long long now = monotonic_ns_c(A.monotonic);
    PyObject *since = now == -1 ? NULL : PyLong_FromLongLong(now);
    if (since == NULL) {
        Py_DECREF(holder);
        return NULL;
    }
    /* Nothing below fails. */
    Py_XSETREF(SLOT(self, A.l_locked), Py_NewRef(Py_True));
    Py_XSETREF(SLOT(self, A.l_holder), holder);
    Py_XSETREF(SLOT(self, A.l_since), since);
    count_up(self, A.l_acq);
    return Py_NewRef((PyObject *)&done_instance);
}

/* Lock.release: the stdlib's, then no holder.  0, or -1 with an error. */
static int
aio_lock_release_c(PyObject *self)
{
    int locked = PyObject_IsTrue(SLOT(self, A.l_locked));
    if (locked <= 0) {
        if (locked == 0) {
            PyErr_SetString(PyExc_RuntimeError, "Lock is not acquired.");
        }
        return -1;
    }
    Py_XSETREF(SLOT(self, A.l_locked), Py_NewRef(Py_False));
    int waits = anyone_waits(SLOT(self, A.l_waiters));
    if (waits > 0) {
        PyObject *ret = PyObject_CallMethodNoArgs(self, A.str_wake_first);
        if (ret == NULL) {
            return -1;
        }
        Py_DECREF(ret);
    }
    Py_XSETREF(SLOT(self, A.l_holder), Py_NewRef(Py_None));
    return waits < 0 ? -1 : 0;
}

static PyObject *
aio_lock_release(PyObject *self, PyObject *unused)
{
    if (!aio_lock_ok(self)) {
        return PyObject_CallOneArg(A.py_lock_release, self);
    }
    if (aio_lock_release_c(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
aio_lock_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *ret = aio_lock_release(self, NULL);
    if (ret == NULL) {
        return NULL;
    }
    Py_DECREF(ret);
    return Py_NewRef((PyObject *)&done_instance);
}

/* A Semaphore whose slots are all set; its hold records two exact dicts. */
static int
aio_sem_slots_ok(PyObject *self)
{
    return A.sem_type != NULL && PyObject_TypeCheck(self, A.sem_type)
           && SLOT(self, A.s_value) != NULL && SLOT(self, A.s_waiters) != NULL
           && SLOT(self, A.s_holding) != NULL && PyDict_CheckExact(SLOT(self, A.s_holding))
           && SLOT(self, A.s_extra) != NULL && PyDict_CheckExact(SLOT(self, A.s_extra))
           && SLOT(self, A.s_acq) != NULL && SLOT(self, A.s_loop) != NULL;
}

/* One whose release the fast path serves: not a BoundedSemaphore, whose
 * release checks the bound. */
static int
aio_sem_ok(PyObject *self)
{
    return aio_sem_slots_ok(self) && !PyObject_TypeCheck(self, A.bounded_type);
}

/* Semaphore.__aenter__: take a permit now if one is free and nobody waits
 * (the stdlib's fast path) and return DONE; anything else is the Python
 * function's (which also takes one when ``locked()`` says so, or waits). */
static PyObject *
aio_sem_enter(PyObject *self, PyObject *unused)
{
    if (!aio_sem_slots_ok(self) || !PyLong_CheckExact(SLOT(self, A.s_value))) {
        return PyObject_CallOneArg(A.py_sem_enter, self);
    }
    int overflow;
    long value = PyLong_AsLongAndOverflow(SLOT(self, A.s_value), &overflow);
    int waits = anyone_waits(SLOT(self, A.s_waiters));
    if (waits < 0) {
        return NULL;
    }
    if (value <= 0 || overflow || waits) {
        return PyObject_CallOneArg(A.py_sem_enter, self);
    }
    PyObject *holder = running_holder(self, A.s_loop);
    if (holder == NULL) {
        return NULL;
    }
    PyObject *less = PyLong_FromLong(value - 1);
    if (less == NULL) {
        Py_DECREF(holder);
        return NULL;
    }
    PyObject *holding = SLOT(self, A.s_holding);
    int held = PyDict_Contains(holding, holder);
    int err = held < 0;
    if (held == 0) {
        /* The common case: the holder's first permit, held since now. */
        long long now = monotonic_ns_c(A.monotonic);
        PyObject *since = now == -1 ? NULL : PyLong_FromLongLong(now);
        err = since == NULL || PyDict_SetItem(holding, holder, since) < 0;
        Py_XDECREF(since);
    }
    else if (held == 1) {
        /* One more permit for a holder: holder -> permits in _peeps_extra. */
        PyObject *extra = SLOT(self, A.s_extra);
        PyObject *count = PyDict_GetItemWithError(extra, holder);
        PyObject *more = count != NULL ? PyNumber_Add(count, A.one)
                         : PyErr_Occurred() ? NULL : PyLong_FromLong(2);
        err = more == NULL || PyDict_SetItem(extra, holder, more) < 0;
        Py_XDECREF(more);
    }
    Py_DECREF(holder);
    if (err) {
        Py_DECREF(less);
        return NULL;
    }
    Py_SETREF(SLOT(self, A.s_value), less);
    count_up(self, A.s_acq);
    return Py_NewRef((PyObject *)&done_instance);
}

/* Semaphore.release: the stdlib's (a permit back, the next waiter woken),
 * then the running task's hold record dropped -- here when it holds one
 * permit, else by _peeps_unhold(). */
static PyObject *
aio_sem_release(PyObject *self, PyObject *unused)
{
    if (!aio_sem_ok(self)) {
        return PyObject_CallOneArg(A.py_sem_release, self);
    }
    PyObject *more = PyNumber_Add(SLOT(self, A.s_value), A.one);
    if (more == NULL) {
        return NULL;
    }
    Py_SETREF(SLOT(self, A.s_value), more);
    int waits = anyone_waits(SLOT(self, A.s_waiters));
    if (waits != 0) {
        PyObject *ret = waits < 0 ? NULL : PyObject_CallMethodNoArgs(self, A.str_wake_next);
        if (ret == NULL) {
            return NULL;
        }
        Py_DECREF(ret);
    }
    PyObject *holding = SLOT(self, A.s_holding);
    PyObject *holder = PyDict_GET_SIZE(SLOT(self, A.s_extra)) == 0
                       ? running_holder(self, A.s_loop) : NULL;
    if (holder != NULL) {
        int dropped = PyDict_DelItem(holding, holder);
        Py_DECREF(holder);
        if (dropped == 0) {
            Py_RETURN_NONE;
        }
    }
    /* Not the common case (or an error looking): the Python bookkeeping. */
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
            return NULL;
        }
        PyErr_Clear();
    }
    return PyObject_CallMethodNoArgs(self, A.str_unhold);
}

static PyObject *
aio_sem_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *ret = aio_sem_release(self, NULL);
    if (ret == NULL) {
        return NULL;
    }
    Py_DECREF(ret);
    return Py_NewRef((PyObject *)&done_instance);
}

static PyMethodDef aio_lock_defs[3] = {
    {"__aenter__", aio_lock_enter, METH_NOARGS,
     "Lock.__aenter__, fast path in C (see _sync._fast_aenter)"},
    {"__aexit__", (PyCFunction)(void (*)(void))aio_lock_exit, METH_FASTCALL,
     "Lock.__aexit__, in C (see _sync._fast_aexit)"},
    {"release", aio_lock_release, METH_NOARGS, "Lock.release, in C (see _sync.Lock.release)"},
};
static PyMethodDef aio_sem_defs[3] = {
    {"__aenter__", aio_sem_enter, METH_NOARGS,
     "Semaphore.__aenter__, fast path in C (see _sync._fast_aenter)"},
    {"__aexit__", (PyCFunction)(void (*)(void))aio_sem_exit, METH_FASTCALL,
     "Semaphore.__aexit__, in C (see _sync._fast_aexit)"},
    {"release", aio_sem_release, METH_NOARGS,
     "Semaphore.release, fast path in C (see _sync.Semaphore.release)"},
};

/* aio_methods(Lock, Semaphore, BoundedSemaphore, current_task, current_tasks,
 *             current_holder, monotonic_ns, py_lock_enter, py_lock_release,
 *             py_sem_enter, py_sem_release)
 *   -> (Lock's __aenter__, __aexit__, release, Semaphore's __aenter__,
 *       __aexit__, release) as method descriptors.
 * current_task: asyncio.current_task where it is C (3.12+), else None, and
 * then current_tasks is the running-task dict (3.11). */
static PyObject *
aio_methods(PyObject *module, PyObject *args)
{
    PyObject *lock_type, *sem_type, *bounded_type, *current_task, *current_tasks,
        *current_holder, *monotonic, *py_lock_enter, *py_lock_release, *py_sem_enter,
        *py_sem_release;
    if (!PyArg_ParseTuple(args, "O!O!O!OOOOOOOO:aio_methods", &PyType_Type, &lock_type,
                          &PyType_Type, &sem_type, &PyType_Type, &bounded_type, &current_task,
                          &current_tasks, &current_holder, &monotonic, &py_lock_enter,
                          &py_lock_release, &py_sem_enter, &py_sem_release)) {
        return NULL;
    }
    if (current_task == Py_None && !PyDict_CheckExact(current_tasks)) {
        PyErr_SetString(PyExc_TypeError, "aio_methods: no current_task, and current_tasks "
                        "is not a dict");
        return NULL;
    }
    Py_ssize_t offs[12];
    const char *lock_names[6] = {"_locked", "_waiters", "_peeps_holder", "_peeps_held_since",
                                 "_peeps_acquisitions", "_peeps_loop"};
    const char *sem_names[6] = {"_value", "_waiters", "_peeps_holding", "_peeps_extra",
                                "_peeps_acquisitions", "_peeps_loop"};
    for (int i = 0; i < 6; i++) {
        if (member_offset(lock_type, lock_names[i], &offs[i]) < 0
            || member_offset(sem_type, sem_names[i], &offs[6 + i]) < 0) {
            return NULL;
        }
    }
    if (A.one == NULL) {
        A.str_wait = PyUnicode_InternFromString("_peeps_wait");
        A.str_running_task = PyUnicode_InternFromString("_peeps_running_task");
        A.str_wake_first = PyUnicode_InternFromString("_wake_up_first");
        A.str_wake_next = PyUnicode_InternFromString("_wake_up_next");
        A.str_unhold = PyUnicode_InternFromString("_peeps_unhold");
        A.one = PyLong_FromLong(1);
        if (A.str_wait == NULL || A.str_running_task == NULL || A.str_wake_first == NULL
            || A.str_wake_next == NULL || A.str_unhold == NULL || A.one == NULL) {
            return NULL;
        }
    }
    PyObject *methods = PyTuple_New(6);
    if (methods == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 6; i++) {
        PyObject *method = PyDescr_NewMethod(
            (PyTypeObject *)(i < 3 ? lock_type : sem_type), i < 3 ? &aio_lock_defs[i] : &aio_sem_defs[i - 3]);
        if (method == NULL) {
            Py_DECREF(methods);
            return NULL;
        }
        PyTuple_SET_ITEM(methods, i, method);
    }
    Py_XSETREF(A.lock_type, (PyTypeObject *)Py_NewRef(lock_type));
    Py_XSETREF(A.sem_type, (PyTypeObject *)Py_NewRef(sem_type));
    Py_XSETREF(A.bounded_type, (PyTypeObject *)Py_NewRef(bounded_type));
    A.l_locked = offs[0];
    A.l_waiters = offs[1];
    A.l_holder = offs[2];
    A.l_since = offs[3];
    A.l_acq = offs[4];
    A.l_loop = offs[5];
    A.s_value = offs[6];
    A.s_waiters = offs[7];
    A.s_holding = offs[8];
    A.s_extra = offs[9];
    A.s_acq = offs[10];
    A.s_loop = offs[11];
    Py_XSETREF(A.current_task, current_task == Py_None ? NULL : Py_NewRef(current_task));
    Py_XSETREF(A.current_tasks, Py_NewRef(current_tasks));
    Py_XSETREF(A.current_holder, Py_NewRef(current_holder));
    Py_XSETREF(A.monotonic, Py_NewRef(monotonic));
    Py_XSETREF(A.py_lock_enter, Py_NewRef(py_lock_enter));
    Py_XSETREF(A.py_lock_release, Py_NewRef(py_lock_release));
    Py_XSETREF(A.py_sem_enter, Py_NewRef(py_sem_enter));
    Py_XSETREF(A.py_sem_release, Py_NewRef(py_sem_release));
    return methods;
}

static int
speedups_exec(PyObject *module)
{
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(str_register_eagerly, "_register_eagerly");
    INTERN(str_capture_sites, "capture_sites");
    INTERN(str_cancel_origin, "cancel_origin");
    INTERN(str_active, "active");
    INTERN(str_enabled, "enabled");
    INTERN(str_peeps_spawn, "_peeps_spawn");
    INTERN(str_loop, "loop");
#undef INTERN
    PyObject *context = PyUnicode_InternFromString("context");
    if (context == NULL) return -1;
    kw_loop = PyTuple_Pack(1, str_loop);
    kw_loop_context = PyTuple_Pack(2, str_loop, context);
    Py_DECREF(context);
    if (kw_loop == NULL || kw_loop_context == NULL) return -1;
    if (PyType_Ready(&FactoryType) < 0) return -1;
    if (PyType_Ready(&DoneType) < 0) return -1;
    if (PyType_Ready(&SpawnType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "DONE", (PyObject *)&done_instance) < 0) return -1;
#ifdef __linux__
    static int atfork_done = 0;
    if (!atfork_done) {
        if (pthread_atfork(NULL, NULL, quiet_forget_in_child) != 0) {
            PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
            return -1;
        }
        atfork_done = 1;
    }
#endif
    return PyModule_AddObjectRef(module, "TaskFactory", (PyObject *)&FactoryType);
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* Static types and interned globals: one interpreter only.  Elsewhere the
     * import fails and peeps uses the Python factory. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

static PyMethodDef speedups_methods[] = {
    {"lock_methods", lock_methods, METH_VARARGS,
     "lock_methods(ThreadLock, HeldChain, local, chain_here, nested, unlink, py_acquire, "
     "py_release, py_clocked_acquire, py_clocked_release, coarse_now, monotonic_ns) -> "
     "(acquire, release, clocked acquire, clocked release): ThreadLock's fast paths in C"},
    {"rlock_methods", rlock_methods, METH_VARARGS,
     "rlock_methods(ThreadRLock, py_acquire, py_release) -> (acquire, release, __exit__): "
     "ThreadRLock's fast path in C (after lock_methods)"},
    {"aio_methods", aio_methods, METH_VARARGS,
     "aio_methods(Lock, Semaphore, BoundedSemaphore, current_task, current_tasks, "
     "current_holder, monotonic_ns, py_lock_enter, py_lock_release, py_sem_enter, "
     "py_sem_release) -> (Lock's __aenter__, __aexit__, release, Semaphore's __aenter__, "
     "__aexit__, release): asyncio Lock's and Semaphore's fast paths in C"},
    {"record_spawn", (PyCFunction)(void (*)(void))record_spawn, METH_FASTCALL,
     "record_spawn(task, current_tasks, loop, meta, monotonic_ns): spawn_tracked's record"},
#ifdef __linux__
    {"quiet_sleep", (PyCFunction)(void (*)(void))quiet_sleep, METH_FASTCALL,
     "quiet_sleep(interval_ns, max_pace, stretch_ns, waker_fd, threshold_ns, sink) -> "
     "(quiet ticks' monotonic ns, woken): the thread sampler's sleep, skipping ticks while "
     "no other thread runs; sink(ticks) is called first, unless None or no tick was quiet"},
    {"quiet_count", quiet_count, METH_NOARGS,
     "quiet_count() -> int: quiet ticks taken in this process so far, those of a "
     "quiet_sleep in progress included"},
    {"quiet_pending", quiet_pending, METH_NOARGS,
     "quiet_pending() -> list of monotonic ns: the quiet ticks of the quiet_sleep in "
     "progress, not yet handed to its sink"},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "peeps._speedups",
    .m_doc = "Optional C versions of peeps' hottest paths (see _autotrack, _tasks).",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
