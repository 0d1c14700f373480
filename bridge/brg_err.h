/* brg_err.h - error codes of the bridge modules and the logging hook main() provides. */
#ifndef BRG_ERR_H
#define BRG_ERR_H

/* Every brg_* function returns 0 or one of these. Append only, never renumber. */
enum brg_err {
	BRG_OK = 0,
	BRG_ENOMEM = -1,    /* allocation failed */
	BRG_EINVAL = -2,    /* invalid argument or setting */
	BRG_ECLOSED = -3,   /* the queue or pipeline is shut down */
	BRG_ETIMEDOUT = -4, /* a bounded wait ran out */
	BRG_ESTORE = -5,    /* the store failed (see the store error) */
	BRG_EMQTT = -6,     /* the MQTT client failed */
	BRG_ENOTFOUND = -7, /* no such device */
	BRG_EIO = -8,       /* a file could not be read */
	BRG_EWIRE = -9,     /* a wire library call failed */
	BRG_ETHREAD = -10,  /* a thread could not be started */
};

const char *brg_strerror(int err);

/* Modules never log: they report through this hook, which main() points at olog.
 * level is an enum olog_level value; msg is one line. */
typedef void (*brg_log_fn)(void *ctx, int level, const char *msg);

#endif
