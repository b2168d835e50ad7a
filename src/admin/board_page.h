/* The migration board's page (GET /ui/): one HTML document with its script
 * and style inline, generated at build time from src/admin/ui/board.html
 * (the Makefile turns it into a C string). */
#ifndef FICUS_ADMIN_BOARD_PAGE_H
#define FICUS_ADMIN_BOARD_PAGE_H

#include <stddef.h>

extern const char board_page_html[];
extern const size_t board_page_html_len;

#endif
