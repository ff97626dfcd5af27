/*
 * lockbench: a lock microbenchmark.
 *
 * N threads repeatedly take one shared lock, do --cs-work iterations of work inside the critical
 * section and --out-work iterations outside it, for --duration seconds. Prints one JSON object on
 * stdout with the throughput, per-thread acquisitions and Jain's fairness index.
 *
 * Locks: ttas, ticket, mcs, mutex (pthread_mutex), oticket (preemptable ticket lock, Ouyang & Lange,
 * VEE 2013), spinpark (spin then futex, Linux only), none (no lock: shows that the check below works).
 *
 * Correctness check: the critical section increments a shared non-atomic counter (read, work, write,
 * so an overlap loses updates). At the end the counter must equal the sum of the per-thread
 * acquisitions; if not, the JSON says "counter_ok": false and the program exits 3.
 *
 * Exit codes: 0 ok, 1 runtime failure (thread creation, affinity), 2 bad option, 3 counter mismatch.
 *
 * Build: cc -O2 -pthread -o lockbench lockbench.c   (C11, gcc or clang; -static works too)
 *
 * Output format history ("lockbench" key):
 *   1 - first release; later additive keys: "stopped_early" (SIGUSR1 ended the measurement before
 *       --duration had passed; since 1.2 a SIGUSR1 that comes after the deadline does not count).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#define LOCKBENCH_FORMAT 1
#define LOCKBENCH_VERSION "1.2"
#define CACHE_LINE 128 /* two 64-byte lines: also keeps adjacent-line prefetch apart */
#define MAX_THREADS 4096
#define MAX_CPUS 4096

/* ---------------------------------------------------------------- portability */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield" ::: "memory");
#elif defined(__powerpc__) || defined(__powerpc64__)
    __asm__ __volatile__("or 27,27,27" ::: "memory");
#else
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

/* Keeps the compiler from folding the work loops away. */
#if defined(__GNUC__)
#define OPAQUE(x) __asm__ __volatile__("" : "+r"(x))
#else
#define OPAQUE(x) __atomic_signal_fence(__ATOMIC_SEQ_CST)
#endif

static inline uint64_t work(uint64_t x, unsigned long n)
{
    for (unsigned long i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        OPAQUE(x);
    }
    return x;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------- locks */

enum lock_kind { L_TTAS, L_TICKET, L_MCS, L_MUTEX, L_OTICKET, L_SPINPARK, L_NONE };
static const char *const lock_names[] = {"ttas", "ticket", "mcs", "mutex", "oticket", "spinpark", "none"};
#define N_LOCKS ((int)(sizeof lock_names / sizeof lock_names[0]))

struct mcs_node {
    struct mcs_node *next;
    int locked;
};

struct thread_state {
    _Alignas(CACHE_LINE) struct mcs_node node; /* this thread's MCS queue node */
    unsigned long long ops;                    /* acquisitions completed */
    uint64_t sink;                             /* result of the out-of-section work */
    int index;
    int cpu;                                   /* CPU to pin to, -1 for none */
    pthread_t tid;
};

static struct {
    _Alignas(CACHE_LINE) int ttas;
    _Alignas(CACHE_LINE) unsigned ticket_next;
    unsigned ticket_owner;
    _Alignas(CACHE_LINE) struct mcs_node *mcs_tail;
    _Alignas(CACHE_LINE) unsigned ot_next;     /* oticket: next ticket to hand out */
    unsigned ot_owner;                         /* oticket: releases so far */
    int ot_held;                               /* oticket: the lock word itself */
    _Alignas(CACHE_LINE) int park;             /* spinpark futex word: 0 free, 1 held, 2 held+waiters */
    _Alignas(CACHE_LINE) pthread_mutex_t mutex;
    /* Protected by the lock under test. volatile: each access really goes to memory. */
    _Alignas(CACHE_LINE) volatile unsigned long long counter;
    volatile uint64_t cs_state;
    _Alignas(CACHE_LINE) int go;
    int ready;
    _Alignas(CACHE_LINE) int stop;
} shared = {.mutex = PTHREAD_MUTEX_INITIALIZER};

static struct {
    enum lock_kind lock;
    int threads;
    double duration;
    unsigned long cs_work;
    unsigned long out_work;
    unsigned long spin_threshold;
    int pin_compact;
    int cpus[MAX_CPUS];
    int ncpus; /* 0: --cpus not given */
    const char *pid_file; /* NULL: none */
} opt = {L_TTAS, 1, 1.0, 100, 100, 1UL << 14, 0, {0}, 0, NULL};

static void ttas_lock(void)
{
    for (;;) {
        while (__atomic_load_n(&shared.ttas, __ATOMIC_RELAXED))
            cpu_relax();
        if (!__atomic_exchange_n(&shared.ttas, 1, __ATOMIC_ACQUIRE))
            return;
    }
}

static void ttas_unlock(void) { __atomic_store_n(&shared.ttas, 0, __ATOMIC_RELEASE); }

static void ticket_lock(void)
{
    unsigned me = __atomic_fetch_add(&shared.ticket_next, 1, __ATOMIC_RELAXED);
    while (__atomic_load_n(&shared.ticket_owner, __ATOMIC_ACQUIRE) != me)
        cpu_relax();
}

static void ticket_unlock(void)
{
    /* Only the holder writes ticket_owner. */
    unsigned o = __atomic_load_n(&shared.ticket_owner, __ATOMIC_RELAXED);
    __atomic_store_n(&shared.ticket_owner, o + 1, __ATOMIC_RELEASE);
}

static void mcs_lock(struct mcs_node *me)
{
    __atomic_store_n(&me->next, NULL, __ATOMIC_RELAXED);
    __atomic_store_n(&me->locked, 1, __ATOMIC_RELAXED);
    struct mcs_node *pred = __atomic_exchange_n(&shared.mcs_tail, me, __ATOMIC_ACQ_REL);
    if (pred == NULL)
        return;
    __atomic_store_n(&pred->next, me, __ATOMIC_RELEASE);
    while (__atomic_load_n(&me->locked, __ATOMIC_ACQUIRE))
        cpu_relax();
}

static void mcs_unlock(struct mcs_node *me)
{
    struct mcs_node *next = __atomic_load_n(&me->next, __ATOMIC_ACQUIRE);
    if (next == NULL) {
        struct mcs_node *expected = me;
        if (__atomic_compare_exchange_n(&shared.mcs_tail, &expected, NULL, 0, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED))
            return;
        /* A successor swapped the tail but has not linked itself yet. */
        while ((next = __atomic_load_n(&me->next, __ATOMIC_ACQUIRE)) == NULL)
            cpu_relax();
    }
    __atomic_store_n(&next->locked, 0, __ATOMIC_RELEASE);
}

/*
 * Preemptable ticket lock (Ouyang & Lange, VEE 2013; their Linux patch uses a timeout unit of 1<<14).
 * Mutual exclusion comes only from the lock word ot_held (CAS 0 -> 1); the tickets only order who may
 * try. A waiter with ticket t may try once ot_owner (the number of releases) has reached t, i.e. its
 * turn has come, or once ot_owner has not moved for spin_threshold iterations per waiter ahead of it
 * (a timeout proportional to its queue position, restarted whenever the lock changes hands): then a
 * preempted waiter ahead of it no longer blocks it. Every release advances ot_owner, so a waiter whose
 * turn was taken by a thief becomes eligible and competes on the lock word when it runs again.
 */
static void oticket_lock(void)
{
    unsigned me = __atomic_fetch_add(&shared.ot_next, 1, __ATOMIC_RELAXED);
    unsigned seen = __atomic_load_n(&shared.ot_owner, __ATOMIC_RELAXED);
    unsigned long spins = 0;
    for (;;) {
        unsigned owner = __atomic_load_n(&shared.ot_owner, __ATOMIC_RELAXED);
        int ahead = (int)(me - owner);
        if (ahead <= 0)
            break;
        if (owner != seen) {
            seen = owner;
            spins = 0;
        }
        if (spins >= opt.spin_threshold * (unsigned long)ahead)
            break;
        spins++;
        cpu_relax();
    }
    for (;;) {
        if (!__atomic_load_n(&shared.ot_held, __ATOMIC_RELAXED)) {
            int expected = 0;
            if (__atomic_compare_exchange_n(&shared.ot_held, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return;
        }
        cpu_relax();
    }
}

static void oticket_unlock(void)
{
    __atomic_fetch_add(&shared.ot_owner, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&shared.ot_held, 0, __ATOMIC_RELEASE);
}

#ifdef __linux__
/* Spin then park: a futex mutex (0 free, 1 held, 2 held and maybe waiters) that spins first. */
static long futex(int *uaddr, int op, int val)
{
    return syscall(SYS_futex, uaddr, op, val, NULL, NULL, 0);
}

static void spinpark_lock(void)
{
    for (unsigned long i = 0; i < opt.spin_threshold; i++) {
        if (!__atomic_load_n(&shared.park, __ATOMIC_RELAXED)) {
            int expected = 0;
            if (__atomic_compare_exchange_n(&shared.park, &expected, 1, 0, __ATOMIC_ACQUIRE,
                                            __ATOMIC_RELAXED))
                return;
        }
        cpu_relax();
    }
    /* Park: mark the lock contended; whoever sees 2 on release wakes one waiter. */
    while (__atomic_exchange_n(&shared.park, 2, __ATOMIC_ACQUIRE) != 0)
        futex(&shared.park, FUTEX_WAIT_PRIVATE, 2);
}

static void spinpark_unlock(void)
{
    if (__atomic_exchange_n(&shared.park, 0, __ATOMIC_RELEASE) == 2)
        futex(&shared.park, FUTEX_WAKE_PRIVATE, 1);
}
#endif

static void do_lock(struct thread_state *t)
{
    switch (opt.lock) {
    case L_TTAS: ttas_lock(); break;
    case L_TICKET: ticket_lock(); break;
    case L_MCS: mcs_lock(&t->node); break;
    case L_MUTEX: pthread_mutex_lock(&shared.mutex); break;
    case L_OTICKET: oticket_lock(); break;
#ifdef __linux__
    case L_SPINPARK: spinpark_lock(); break;
#else
    case L_SPINPARK: break; /* refused by option parsing */
#endif
    case L_NONE: break;
    }
}

static void do_unlock(struct thread_state *t)
{
    switch (opt.lock) {
    case L_TTAS: ttas_unlock(); break;
    case L_TICKET: ticket_unlock(); break;
    case L_MCS: mcs_unlock(&t->node); break;
    case L_MUTEX: pthread_mutex_unlock(&shared.mutex); break;
    case L_OTICKET: oticket_unlock(); break;
#ifdef __linux__
    case L_SPINPARK: spinpark_unlock(); break;
#else
    case L_SPINPARK: break;
#endif
    case L_NONE: break;
    }
}

/* ---------------------------------------------------------------- threads */

static int pin_self(int cpu)
{
#ifdef __linux__
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
#else
    (void)cpu;
    return ENOSYS;
#endif
}

static void *worker(void *arg)
{
    struct thread_state *t = arg;
    if (t->cpu >= 0) {
        int rc = pin_self(t->cpu);
        if (rc != 0) {
            fprintf(stderr, "lockbench: cannot pin thread %d to cpu %d: %s\n", t->index, t->cpu,
                    strerror(rc));
            exit(1);
        }
    }
    uint64_t x = (uint64_t)t->index + 1;
    unsigned long long ops = 0;

    __atomic_fetch_add(&shared.ready, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&shared.go, __ATOMIC_ACQUIRE))
        sched_yield();

    while (!__atomic_load_n(&shared.stop, __ATOMIC_RELAXED)) {
        do_lock(t);
        unsigned long long c = shared.counter;
        shared.cs_state = work(shared.cs_state, opt.cs_work);
        shared.counter = c + 1;
        do_unlock(t);
        ops++;
        x = work(x, opt.out_work);
    }
    t->ops = ops;
    t->sink = x;
    return NULL;
}

/* ---------------------------------------------------------------- options */

__attribute__((format(printf, 1, 2))) static _Noreturn void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("lockbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (see --help)\n", stderr);
    exit(2);
}

static void print_help(void)
{
    printf("usage: lockbench [options]\n"
           "  --lock L             ttas | ticket | mcs | mutex | oticket | spinpark | none (default ttas;\n"
           "                       none takes no lock and exists to show the counter check works)\n"
           "  --threads N          worker threads (default 1, at most %d)\n"
           "  --duration S         seconds to run, a float (default 1); SIGUSR1 ends the run earlier\n"
           "                       (the runner stops k guests' runs at one instant: a common window)\n"
           "  --cs-work N          work loop iterations inside the critical section (default 100)\n"
           "  --out-work N         work loop iterations outside it (default 100)\n"
           "  --spin-threshold N   spin iterations: oticket waits N per waiter ahead before taking the\n"
           "                       lock out of turn; spinpark spins N before parking (default 16384)\n"
           "  --pin none|compact   compact: thread i runs on the i-th CPU of --cpus (or of the affinity\n"
           "                       mask) modulo its length; none: threads float (default none)\n"
           "  --cpus LIST          CPUs to use, e.g. 0-3,6; with --pin none all threads float over them\n"
           "  --pid-file PATH      write the process ID to PATH once SIGUSR1 is handled; removed at exit\n"
           "  --help, --version\n"
           "Prints one JSON object on stdout. Exit: 0 ok, 1 runtime failure, 2 bad option,\n"
           "3 counter mismatch (the lock broke mutual exclusion).\n",
           MAX_THREADS);
}

static unsigned long parse_ulong(const char *s, const char *name)
{
    char *end;
    errno = 0;
    unsigned long v = (*s >= '0' && *s <= '9') ? strtoul(s, &end, 10) : 0;
    if (*s < '0' || *s > '9' || errno != 0 || *end != '\0')
        usage_error("%s: '%s' is not a non-negative integer", name, s);
    return v;
}

static void parse_cpus(const char *s)
{
    const char *p = s;
    opt.ncpus = 0;
    for (;;) {
        char *end;
        if (*p < '0' || *p > '9')
            usage_error("--cpus: bad CPU list '%s'", s);
        long lo = strtol(p, &end, 10), hi = lo;
        p = end;
        if (*p == '-') {
            p++;
            if (*p < '0' || *p > '9')
                usage_error("--cpus: bad CPU list '%s'", s);
            hi = strtol(p, &end, 10);
            p = end;
        }
        if (lo > hi || hi >= MAX_CPUS)
            usage_error("--cpus: bad CPU range in '%s'", s);
        for (long c = lo; c <= hi; c++) {
            if (opt.ncpus == MAX_CPUS)
                usage_error("--cpus: too many CPUs in '%s'", s);
            opt.cpus[opt.ncpus++] = (int)c;
        }
        if (*p == '\0')
            return;
        if (*p != ',')
            usage_error("--cpus: bad CPU list '%s'", s);
        p++;
    }
}

static void parse_args(int argc, char **argv)
{
    enum { O_LOCK = 256, O_THREADS, O_DURATION, O_CS, O_OUT, O_SPIN, O_PIN, O_CPUS, O_PIDFILE, O_HELP, O_VERSION };
    static const struct option longopts[] = {
        {"lock", required_argument, NULL, O_LOCK},
        {"threads", required_argument, NULL, O_THREADS},
        {"duration", required_argument, NULL, O_DURATION},
        {"cs-work", required_argument, NULL, O_CS},
        {"out-work", required_argument, NULL, O_OUT},
        {"spin-threshold", required_argument, NULL, O_SPIN},
        {"pin", required_argument, NULL, O_PIN},
        {"cpus", required_argument, NULL, O_CPUS},
        {"pid-file", required_argument, NULL, O_PIDFILE},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    int c;
    opterr = 0; /* we print our own messages */
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (c) {
        case O_LOCK: {
            int i;
            for (i = 0; i < N_LOCKS && strcmp(optarg, lock_names[i]) != 0; i++)
                ;
            if (i == N_LOCKS)
                usage_error("--lock: unknown lock '%s'; known: ttas, ticket, mcs, mutex, oticket, "
                            "spinpark, none",
                            optarg);
            opt.lock = (enum lock_kind)i;
            break;
        }
        case O_THREADS: {
            unsigned long n = parse_ulong(optarg, "--threads");
            if (n < 1 || n > MAX_THREADS)
                usage_error("--threads: %s is out of range 1..%d", optarg, MAX_THREADS);
            opt.threads = (int)n;
            break;
        }
        case O_DURATION: {
            char *end;
            errno = 0;
            double d = strtod(optarg, &end);
            if (errno != 0 || *end != '\0' || end == optarg || !(d > 0.0 && d <= 86400.0))
                usage_error("--duration: '%s' is not a number of seconds in (0, 86400]", optarg);
            opt.duration = d;
            break;
        }
        case O_PIDFILE: opt.pid_file = optarg; break;
        case O_CS: opt.cs_work = parse_ulong(optarg, "--cs-work"); break;
        case O_OUT: opt.out_work = parse_ulong(optarg, "--out-work"); break;
        case O_SPIN:
            opt.spin_threshold = parse_ulong(optarg, "--spin-threshold");
            break;
        case O_PIN:
            if (strcmp(optarg, "compact") == 0)
                opt.pin_compact = 1;
            else if (strcmp(optarg, "none") == 0)
                opt.pin_compact = 0;
            else
                usage_error("--pin: '%s' is not one of none, compact", optarg);
            break;
        case O_CPUS: parse_cpus(optarg); break;
        case O_HELP: print_help(); exit(0);
        case O_VERSION: printf("lockbench %s\n", LOCKBENCH_VERSION); exit(0);
        case ':': usage_error("option %s needs a value", argv[optind - 1]);
        default: usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
#ifndef __linux__
    if (opt.lock == L_SPINPARK)
        usage_error("--lock: 'spinpark' needs Linux futexes");
    if (opt.pin_compact || opt.ncpus > 0)
        usage_error("%s: CPU affinity is only supported on Linux", opt.pin_compact ? "--pin" : "--cpus");
#endif
}

/* Check --cpus against the affinity mask, or take the mask as the CPU list. */
static void resolve_cpus(void)
{
#ifdef __linux__
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) {
        perror("lockbench: sched_getaffinity");
        exit(1);
    }
    if (opt.ncpus == 0) {
        for (int c = 0; c < CPU_SETSIZE && c < MAX_CPUS; c++)
            if (CPU_ISSET(c, &allowed))
                opt.cpus[opt.ncpus++] = c;
        return;
    }
    cpu_set_t want;
    CPU_ZERO(&want);
    for (int i = 0; i < opt.ncpus; i++) {
        if (opt.cpus[i] >= CPU_SETSIZE || !CPU_ISSET(opt.cpus[i], &allowed)) {
            usage_error("--cpus: cpu %d is not in this process's affinity mask", opt.cpus[i]);
        }
        CPU_SET(opt.cpus[i], &want);
    }
    if (!opt.pin_compact && sched_setaffinity(0, sizeof want, &want) != 0) {
        perror("lockbench: sched_setaffinity");
        exit(1);
    }
#endif
}

/* ---------------------------------------------------------------- main */

static volatile sig_atomic_t stop_requested;

static void on_usr1(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

int main(int argc, char **argv)
{
    /* First thing: a SIGUSR1 that comes early must end the run, not the process. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    parse_args(argc, argv);
    resolve_cpus();
    /* The pid file says "this run can be stopped now": written after the handler is in place, to a
     * temporary name and renamed, so a reader never sees a partial pid. */
    if (opt.pid_file != NULL) {
        char tmp[4096];
        FILE *f = NULL;
        if (snprintf(tmp, sizeof tmp, "%s.tmp", opt.pid_file) >= (int)sizeof tmp || (f = fopen(tmp, "w")) == NULL ||
            fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 || rename(tmp, opt.pid_file) != 0) {
            fprintf(stderr, "lockbench: --pid-file %s: %s\n", opt.pid_file, strerror(errno));
            return 1;
        }
    }

    struct thread_state *ts = aligned_alloc(CACHE_LINE, sizeof *ts * (size_t)opt.threads);
    if (ts == NULL) {
        perror("lockbench: aligned_alloc");
        return 1;
    }
    memset(ts, 0, sizeof *ts * (size_t)opt.threads);
    for (int i = 0; i < opt.threads; i++) {
        ts[i].index = i;
        ts[i].cpu = opt.pin_compact ? opt.cpus[i % opt.ncpus] : -1;
        int rc = pthread_create(&ts[i].tid, NULL, worker, &ts[i]);
        if (rc != 0) {
            fprintf(stderr, "lockbench: cannot create thread %d: %s\n", i, strerror(rc));
            return 1;
        }
    }
    while (__atomic_load_n(&shared.ready, __ATOMIC_ACQUIRE) < opt.threads)
        sleep_s(0.0005);

    double t0 = now_s();
    __atomic_store_n(&shared.go, 1, __ATOMIC_RELEASE);
    /* Until --duration has passed or SIGUSR1 came (checked every 10 ms, whichever thread got it). */
    for (double left; !stop_requested && (left = t0 + opt.duration - now_s()) > 0;)
        sleep_s(left < 0.01 ? left : 0.01);
    /* What ended the measurement: read once here, so a SIGUSR1 during the joins does not count. */
    int stopped_early = stop_requested != 0;
    __atomic_store_n(&shared.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < opt.threads; i++)
        pthread_join(ts[i].tid, NULL);
    /* Acquisitions in flight when stop was set still count, so the clock stops after the joins. */
    double elapsed = now_s() - t0;
    if (opt.pid_file != NULL)
        unlink(opt.pid_file);

    unsigned long long total = 0;
    double sum = 0.0, sumsq = 0.0;
    for (int i = 0; i < opt.threads; i++) {
        total += ts[i].ops;
        sum += (double)ts[i].ops;
        sumsq += (double)ts[i].ops * (double)ts[i].ops;
    }
    double jain = sumsq > 0.0 ? sum * sum / ((double)opt.threads * sumsq) : 1.0;
    int counter_ok = shared.counter == total;

    printf("{\"lockbench\": %d, \"lock\": \"%s\", \"threads\": %d, \"duration_s\": %.9f, "
           "\"cs_work\": %lu, \"out_work\": %lu, \"spin_threshold\": %lu, \"pin\": \"%s\", "
           "\"cpus\": [",
           LOCKBENCH_FORMAT, lock_names[opt.lock], opt.threads, elapsed, opt.cs_work, opt.out_work,
           opt.spin_threshold, opt.pin_compact ? "compact" : "none");
    for (int i = 0; i < opt.ncpus; i++)
        printf("%s%d", i ? ", " : "", opt.cpus[i]);
    printf("], \"online_cpus\": %ld, \"total_ops\": %llu, \"throughput_ops_s\": %.3f, "
           "\"per_thread_ops\": [",
           sysconf(_SC_NPROCESSORS_ONLN), total, (double)total / elapsed);
    for (int i = 0; i < opt.threads; i++)
        printf("%s%llu", i ? ", " : "", ts[i].ops);
    printf("], \"jain_fairness\": %.6f, \"counter\": %llu, \"counter_ok\": %s, "
           "\"mean_ops_per_thread\": %.3f, \"stopped_early\": %s, \"version\": \"%s\"}\n",
           jain, shared.counter, counter_ok ? "true" : "false", sum / opt.threads,
           stopped_early ? "true" : "false", LOCKBENCH_VERSION);
    fflush(stdout);
    free(ts);
    if (!counter_ok) {
        fprintf(stderr, "lockbench: counter mismatch: counter %llu != %llu acquisitions: lock '%s' broke "
                        "mutual exclusion\n",
                shared.counter, total, lock_names[opt.lock]);
        return 3;
    }
    return 0;
}
