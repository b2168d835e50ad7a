/* The end reasons table; see end_reason.h. */
#include "proxy/end_reason.h"

const end_reason_info_t end_reasons[END_REASON_COUNT] = {
#define END_REASON_ROW(id, name, status, code, message, try_code, outcome)                         \
    [END_##id] = {name, status, code, message, try_code, outcome},
    END_REASONS(END_REASON_ROW)
#undef END_REASON_ROW
};
