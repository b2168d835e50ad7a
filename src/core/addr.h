/* Address and CIDR parsing (sans-I/O; no DNS here).
 * Forms: "host:port", "[v6]:port", ":port" (any address). */
#ifndef FICUS_CORE_ADDR_H
#define FICUS_CORE_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct addr_hostport {
    char host[256]; /* "" for ":port"; without brackets for v6 */
    uint16_t port;
} addr_hostport_t;

/* Splits "host:port"; 0 or FE_INVAL with *why set to a static message. */
int addr_split(const char *s, addr_hostport_t *out, const char **why);
/* Numeric host only: fills ss (empty host = 0.0.0.0). FE_INVAL if not numeric. */
int addr_numeric(const addr_hostport_t *hp, struct sockaddr_storage *ss, socklen_t *len);
/* "1.2.3.4:80" / "[::1]:80" */
size_t addr_format(const struct sockaddr *sa, char *buf, size_t n);
/* IP only, no port. */
size_t addr_format_ip(const struct sockaddr *sa, char *buf, size_t n);

typedef struct cidr {
    uint8_t family; /* AF_INET or AF_INET6 */
    uint8_t prefix;
    uint8_t bytes[16];
} cidr_t;

/* "10.0.0.0/8", "::1/128", or a bare address (full-length prefix). */
int cidr_parse(const char *s, cidr_t *out);
bool cidr_match(const cidr_t *c, const struct sockaddr *sa);
/* Matches a textual IP (as found in X-Forwarded-For). */
bool cidr_match_text(const cidr_t *c, const char *ip, size_t len);

#endif
