/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Character devices and fd sets on the command line, as libvirt starts
 * a guest: -add-fd set=N,fd=M hands over an fd that a path /dev/fdset/N
 * then names; -chardev socket,id=X,fd=N,server=on,wait=off (a socket the
 * caller listens on already) or path=P; -chardev file,id=X,path=P
 * [,append=on]; -mon chardev=X,mode=control|readline puts a QMP or HMP
 * server on a socket chardev; -device isa-serial,chardev=X the serial
 * port on a file one.
 *
 * Main thread, at start.  Error contract: GError **errp last, bool (or
 * fd, -1 on failure).
 */
#ifndef SYSTEM_CHARDEV_H
#define SYSTEM_CHARDEV_H

#include <stdbool.h>

#include <glib.h>

typedef enum ChardevKind {
    CHARDEV_SOCKET,
    CHARDEV_FILE,
    CHARDEV_NULL,
} ChardevKind;

typedef struct ChardevOptions {
    char *id;
    ChardevKind kind;
    int fd;                     /* socket: fd=N, a listening socket; else -1 */
    char *path;                 /* socket: path=; file: path= */
    bool append;                /* file: append=on (else truncated) */
    bool used;                  /* a monitor or a device took it */
} ChardevOptions;

typedef struct FdSetEntry {
    int set, fd;
    char *opaque;
} FdSetEntry;

typedef struct Chardevs {
    GPtrArray *devs;            /* ChardevOptions * */
    GArray *fdsets;             /* FdSetEntry */
} Chardevs;

void chardevs_init(Chardevs *c);
void chardevs_cleanup(Chardevs *c);

/* -chardev BACKEND,id=ID,... */
bool chardev_parse(Chardevs *c, const char *arg, GError **errp);

/* -add-fd fd=N,set=M[,opaque=S]: N must be open. */
bool add_fd_parse(Chardevs *c, const char *arg, GError **errp);

ChardevOptions *chardev_find(Chardevs *c, const char *id);

/*
 * mon_resolve: -mon chardev=ID,mode=control|readline as the spec a
 * QMP (*@qmp true) or HMP server takes: unix:PATH,server=on,wait=off
 * or fd:N.  A new string.
 */
char *mon_resolve(Chardevs *c, const char *arg, bool *qmp, GError **errp);

/*
 * chardev_open_output: *@fd, an fd to write @dev's output to (a file
 * chardev: the fd set's fd for /dev/fdset/N, dup'd; else the file,
 * created, appended to or truncated), or -1 for a null one.
 */
bool chardev_open_output(Chardevs *c, ChardevOptions *dev, int *fd,
                         GError **errp);

#endif
