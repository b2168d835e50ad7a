/* Admission: the ordered steps a request passes after its route is known and
 * before any exchange starts. A step reads the request and, while it runs,
 * the client's head (request_t.head). It lets the request on, denies it (an
 * end reason and a message), or makes it wait: it started something (a
 * lookup, a call) and the request resumes when that ends, at the same step,
 * which is run again (with the head parsed again) and answers from what it
 * stored. Today's steps are the route's
 * IP rules and the body size limit; authentication and rate limits come next. */
#ifndef FICUS_PROXY_ADMISSION_H
#define FICUS_PROXY_ADMISSION_H

#include <stddef.h>
#include <stdint.h>

#include "proxy/end_reason.h"
#include "proxy/request.h"

typedef enum {
    ADMIT_NEXT, /* on to the next step */
    ADMIT_WAIT, /* suspended: run this step again when the request resumes */
    ADMIT_DENY  /* answered with deny->why */
} admit_t;

typedef struct admission_deny {
    end_reason_t why;
    const char *message; /* NULL: the reason's own */
} admission_deny_t;

typedef struct admission_step {
    const char *name;
    admit_t (*run)(void *subject, admission_deny_t *deny);
    /* The request ended while this step made it wait: drop what it started
     * (NULL: a step that never waits). */
    void (*cancel)(void *subject);
} admission_step_t;

/* Runs steps[*at..n) on subject, moving *at past each step that lets it on:
 * ADMIT_NEXT once all did, ADMIT_WAIT when step *at waits, ADMIT_DENY. */
admit_t admission_run(const admission_step_t *steps, size_t n, uint32_t *at, void *subject,
                      admission_deny_t *deny);

/* The request path's steps, in order (subject: a request_t). */
extern const admission_step_t admission_steps[];
extern const size_t admission_n_steps;

#endif
