/* ocall.h - a blocking call that nothing can cancel (a name lookup, a library's teardown) run on
 * a thread of its own, waited for until a deadline and left to finish alone past it. */
#ifndef OCALL_H
#define OCALL_H

#include <stdint.h>

enum ocall_err {
	OCALL_OK = 0,
	OCALL_ELATE = -1,   /* the deadline passed first: fn runs on, alone */
	OCALL_ENOMEM = -2,  /* no memory for the call's state: fn was not called */
	OCALL_ETHREAD = -3, /* no thread could be started: fn was not called */
};

/* Run fn(arg) on a new thread, started with every signal blocked, and wait for it until
 * deadline_ms (otime_mono_ms()). Who owns arg after the return:
 * - OCALL_OK: fn has returned and its thread is gone; arg is the caller's again, with what fn
 *   left in it.
 * - OCALL_ELATE: fn is still running, and the caller is never told when it returns. With late,
 *   arg is the thread's: the caller must not touch it again, and late(arg) runs on the thread
 *   once fn has returned (to free it). Without late (NULL), arg stays the caller's, who must
 *   keep it valid for as long as fn may run (to the process's exit) and share with fn only
 *   what arg itself locks.
 * - OCALL_ENOMEM, OCALL_ETHREAD: fn was not called (the caller may call it itself); arg is the
 *   caller's.
 * The call's own state is freed by whichever of the two threads lets go of it last. */
int ocall_until(void (*fn)(void *arg), void *arg, void (*late)(void *arg), int64_t deadline_ms);

#endif
