/* Admission: the ordered steps a request passes after its route is known and
 * before any exchange starts. A step reads the request and, while it runs,
 * the client's head (request_t.head). It lets the request on, denies it (an
 * end reason and a message), or makes it wait: it started something (a
 * lookup, a call) and the request resumes when that ends, at the same step,
 * which is run again (with the head parsed again) and answers from what it
 * stored. The steps: the route's IP rules, the body size limit, the API
 * client (X-Api-Key) and the route's clients list, the user (JWT or session
 * exchange), the client's concurrency throttle, the route's rate limit. */
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

/* What the request's steps hold goes back (a throttle count): at its end,
 * whichever way it ended. Safe to call more than once. */
void admission_release(request_t *req);

/* The request path's steps, in order (subject: a request_t). */
extern const admission_step_t admission_steps[];
extern const size_t admission_n_steps;

#endif
