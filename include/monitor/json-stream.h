/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Cut a byte stream into complete top-level JSON texts, as QMP needs:
 * clients may send several objects in one write, or one object over
 * many, with or without newlines between them.
 *
 * The splitter tracks nesting and strings, and rejects at once a byte
 * that cannot occur outside a string in JSON (so "{ bad" is answered
 * without waiting for a closing brace); after such an error it skips
 * to the next newline.  json-glib parses each text it hands out.  Owned
 * by one thread (the monitor's).
 */
#ifndef MONITOR_JSON_STREAM_H
#define MONITOR_JSON_STREAM_H

#include <stdbool.h>
#include <stddef.h>

#include <glib.h>

#define JSON_STREAM_MAX_SIZE    (1 << 20)   /* bytes in one text */
#define JSON_STREAM_MAX_DEPTH   1024    /* QEMU's MAX_NESTING */

typedef struct JsonStream {
    GString *buf;               /* the text being collected */
    int depth;
    bool in_string, escape;
    const char *overflow;       /* why this text is dropped, or NULL */
    bool skipping;              /* after a bad byte: ignore up to '\n' */
} JsonStream;

/*
 * Called for each complete text, or with @text NULL and @error set when
 * a text broke a limit (it is dropped and the stream resynchronises at
 * the next top-level value).
 */
typedef void (*JsonStreamFunc)(void *opaque, const char *text,
                               const char *error);

void json_stream_init(JsonStream *s);
void json_stream_cleanup(JsonStream *s);
void json_stream_feed(JsonStream *s, const char *data, size_t len,
                      JsonStreamFunc fn, void *opaque);

/*
 * json_stream_member_raw: the text of member @name's value in the
 * top-level object of the complete JSON @text, exactly as written
 * (QMP echoes an "id" so: json-glib would turn 2^64 into -1), or NULL.
 * The member name is compared as written, escapes unresolved.
 */
char *json_stream_member_raw(const char *text, const char *name);

#endif
