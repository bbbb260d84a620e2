/* greenlet's C API, found at run time.
 *
 * greenlet publishes a table of function pointers in the capsule
 * "greenlet._C_API" (greenlet/greenlet.h: "It does not change").  The core
 * reads the entries it uses from that capsule the first time green
 * handlers are asked for, so greenlet is neither a build nor an install
 * dependency of fastserver: only of the servers that use GreenMixIn.  The
 * indices and signatures below are those of greenlet.h, 1.0 to 3.x.
 */
#ifndef FASTSERVER_GREENLET_H
#define FASTSERVER_GREENLET_H

#include <Python.h>

typedef PyObject fs_greenlet;  /* a greenlet.greenlet; only ever passed back */

typedef fs_greenlet *(*fs_greenlet_new_fn)(PyObject *run, fs_greenlet *parent);
typedef fs_greenlet *(*fs_greenlet_current_fn)(void);
typedef PyObject *(*fs_greenlet_throw_fn)(fs_greenlet *g, PyObject *typ,
                                           PyObject *val, PyObject *tb);
typedef PyObject *(*fs_greenlet_switch_fn)(fs_greenlet *g, PyObject *args,
                                            PyObject *kwargs);
typedef int (*fs_greenlet_state_fn)(fs_greenlet *g);

static fs_greenlet_new_fn fs_greenlet_new_ptr = NULL;
static fs_greenlet_current_fn fs_greenlet_current_ptr = NULL;
static fs_greenlet_throw_fn fs_greenlet_throw_ptr = NULL;
static fs_greenlet_switch_fn fs_greenlet_switch_ptr = NULL;
static fs_greenlet_state_fn fs_greenlet_active_ptr = NULL;
static PyObject *fs_greenlet_exit = NULL;

/* 0 once the table is read (any later call is free), -1 with an
 * exception (ImportError: greenlet is not installed). */
static int fs_greenlet_import(void)
{
    void **api;
    if (fs_greenlet_switch_ptr != NULL)
        return 0;
    api = (void **)PyCapsule_Import("greenlet._C_API", 0);
    if (api == NULL)
        return -1;
    fs_greenlet_exit = (PyObject *)api[2];        /* PyExc_GreenletExit_NUM */
    fs_greenlet_new_ptr = (fs_greenlet_new_fn)api[3];
    fs_greenlet_current_ptr = (fs_greenlet_current_fn)api[4];
    fs_greenlet_throw_ptr = (fs_greenlet_throw_fn)api[5];
    fs_greenlet_active_ptr = (fs_greenlet_state_fn)api[10];
    fs_greenlet_switch_ptr = (fs_greenlet_switch_fn)api[6];  /* last: the "done" flag */
    return 0;
}

static inline PyObject *fs_greenlet_new(PyObject *run, PyObject *parent)
{ return (PyObject *)fs_greenlet_new_ptr(run, (fs_greenlet *)parent); }
static inline PyObject *fs_greenlet_getcurrent(void)
{ return (PyObject *)fs_greenlet_current_ptr(); }
static inline PyObject *fs_greenlet_switch(PyObject *g, PyObject *args)
{ return fs_greenlet_switch_ptr((fs_greenlet *)g, args, NULL); }
static inline PyObject *fs_greenlet_throw(PyObject *g, PyObject *typ)
{ return fs_greenlet_throw_ptr((fs_greenlet *)g, typ, NULL, NULL); }
static inline int fs_greenlet_active(PyObject *g)
{ return fs_greenlet_active_ptr((fs_greenlet *)g); }
/* A new reference, as every function here returns. */
static inline PyObject *fs_greenlet_exit_type(void)
{ Py_INCREF(fs_greenlet_exit); return fs_greenlet_exit; }

#endif
