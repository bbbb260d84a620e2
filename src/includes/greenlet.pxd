# greenlet's C API (includes/greenlet.h): read from greenlet's capsule at
# run time by import_api(), so greenlet is needed only by green servers.
cdef extern from "includes/greenlet.h":
    int import_api "fs_greenlet_import"() except -1
    object new "fs_greenlet_new"(object run, object parent)
    object getcurrent "fs_greenlet_getcurrent"()
    # Switch to ``g`` with ``args`` (a tuple); returns what the next switch
    # back passes (a 1-tuple arrives unpacked), or raises what was thrown.
    object switch "fs_greenlet_switch"(object g, object args)
    object throw "fs_greenlet_throw"(object g, object typ)
    bint active "fs_greenlet_active"(object g)
    object exit_type "fs_greenlet_exit_type"()
