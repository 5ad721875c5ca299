// cellsp pty harness: a Verilated UART design behind a pseudo-terminal.
// Usage: <binary> --bit-cycles N[/D] [--parent-pid PID]: N / D clock cycles a bit (N >= 2D).
// Prints the pty slave's path on stdout, then one line of counters per byte written to stdin.
// Exits 0 when stdin is closed.
#include <termios.h>

#include "harness.h"

static const char* const kProgram = "cellsp-pty";
static const uint64_t kCheckEvery = 256;       // cycles between non-blocking pty reads
static const uint64_t kServeEvery = 4096;      // cycles between checks of stdin (counters, EOF)
static const uint64_t kQuietCycles = 200000;   // run freely this long after the last bit
static const size_t kInputCap = 1 << 20;       // stop reading the pty beyond this backlog

// The bit period: n / d clock cycles, n >= 2d. Bit boundaries are timed by a phase: the time
// to the next one in units of 1/d cycle, falling by d a cycle; the cycle it is below d holds a
// boundary (the floor of its ideal time) and it wraps up by n. (With d = 1: a down-counter.)
struct Period {
    uint64_t n = 0, d = 1;
    // Advance `phase` by a cycle; whether a boundary fell in this cycle.
    bool tick(uint64_t& phase) const {
        if (phase < d) {
            phase += n - d;
            return true;
        }
        phase -= d;
        return false;
    }
    uint64_t ceil(uint64_t bits) const { return (bits * n + d - 1) / d; }   // cycles of `bits`
};

// The bytes from the host, sent bit-serially on uart_rx (8N1, LSB first).
struct Serializer {
    Period p;
    ByteQueue queue;
    int bit = -1;          // bit of the frame on the line (0 start .. 9 stop), -1 idle
    uint64_t phase;        // to the end of that bit; runs on across back-to-back frames
    uint16_t frame = 0;
    uint64_t sent = 0;
    uint64_t line_cycles = 0;   // cycles with a frame on the line
    explicit Serializer(Period period) : p(period), phase(period.n - period.d) {}
    bool busy() const { return bit >= 0 || !queue.empty(); }
    int level() {
        if (bit < 0) {
            if (queue.empty()) {
                phase = p.n - p.d;     // a start bit from the next cycle lasts a full period
                return 1;
            }
            frame = static_cast<uint16_t>((queue.front() << 1) | (1u << 9));
            queue.pop();
            bit = 0;
        }
        int out = (frame >> bit) & 1;
        line_cycles++;
        if (p.tick(phase) && ++bit == 10) {
            bit = -1;
            sent++;
        }
        return out;
    }
};

// uart_tx decoded: a start edge, then each bit sampled in its middle.
struct Deserializer {
    Period p;
    bool receiving = false, wait_high = false;
    uint64_t phase = 0;    // to the middle of the next bit
    int k = 0;             // that bit (0 start .. 9 stop)
    uint16_t bits = 0;
    uint64_t framing_errors = 0, received = 0;
    explicit Deserializer(Period period) : p(period) {}
    bool busy() const { return receiving; }
    // Returns the byte completed this cycle, or -1.
    int sample(int level) {
        if (!receiving) {
            if (wait_high) {
                wait_high = level == 0;
                return -1;
            }
            if (level) return -1;
            receiving = true;
            phase = p.n / 2;   // the start edge is this cycle: its middle half a period on
            k = 0;
            bits = 0;
        }
        if (!p.tick(phase)) return -1;
        bits |= static_cast<uint16_t>(level << k);
        if (k == 0 && level) {   // a glitch
            receiving = false;
            return -1;
        }
        if (k++ < 9) return -1;
        receiving = false;
        if (!level) {
            framing_errors++;
            wait_high = true;
            return -1;
        }
        received++;
        return (bits >> 1) & 0xFF;
    }
};

static bool read_master(int master, Serializer& ser) {
    uint8_t buf[4096];
    bool got = false;
    while (ser.queue.size() < kInputCap) {
        ssize_t k = read(master, buf, sizeof buf);
        if (k > 0) {
            ser.queue.append(buf, static_cast<size_t>(k));
            got = true;
            continue;
        }
        // EIO: no slave open (cannot happen while we hold one); EAGAIN: nothing there
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != EIO)
            die(kProgram, "reading the pty");
        break;
    }
    return got;
}

static void write_master(int master, std::vector<uint8_t>& out) {
    size_t done = 0;
    while (done < out.size()) {
        ssize_t k = write(master, out.data() + done, out.size() - done);
        if (k > 0) {
            done += static_cast<size_t>(k);
            continue;
        }
        if (k < 0 && errno == EINTR) continue;
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) die(kProgram, "writing the pty");
        break;   // the client is not reading: keep the rest, like a UART with no one listening
    }
    out.erase(out.begin(), out.begin() + static_cast<long>(done));
}

// Read stdin: EOF ends the harness; each byte asks for a line of counters.
static void serve_stdin(uint64_t cycles, const Serializer& ser, const Deserializer& des) {
    uint8_t buf[64];
    ssize_t k = read(0, buf, sizeof buf);
    if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) exit(kExitOk);
    for (ssize_t i = 0; i < k; i++) {
        printf("cycles %llu rx_bytes %llu rx_line_cycles %llu tx_bytes %llu "
               "tx_framing_errors %llu\n",
               static_cast<unsigned long long>(cycles), static_cast<unsigned long long>(ser.sent),
               static_cast<unsigned long long>(ser.line_cycles),
               static_cast<unsigned long long>(des.received),
               static_cast<unsigned long long>(des.framing_errors));
    }
    fflush(stdout);
}

// poll() the pty master and stdin for up to timeout_ms; serve what is ready. Exit when the
// parent has gone (stdin at EOF, or we were re-parented because it died).
static void check(int master, Serializer& ser, const Deserializer& des, uint64_t cycles,
                  long parent, int timeout_ms) {
    if (parent && getppid() != parent) exit(kExitOk);
    struct pollfd fds[2] = {{master, POLLIN, 0}, {0, POLLIN, 0}};
    int n = poll(fds, 2, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return;
        die(kProgram, "poll");
    }
    if (fds[0].revents & (POLLERR | POLLNVAL)) {
        fprintf(stderr, "%s: the pty master failed\n", kProgram);
        exit(kExitError);
    }
    if (fds[0].revents & POLLIN) read_master(master, ser);
    if (fds[1].revents) serve_stdin(cycles, ser, des);
}

// Open a pseudo-terminal in raw mode; return its master (non-blocking) and print the slave's
// path on stdout. The slave stays open here: without any open slave, reads of the master fail
// with EIO and poll() reports a hang-up at once, so clients could not come and go.
static int open_pty() {
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0) die(kProgram, "posix_openpt");
    if (grantpt(master) != 0) die(kProgram, "grantpt");
    if (unlockpt(master) != 0) die(kProgram, "unlockpt");
    const char* name = ptsname(master);
    if (!name) die(kProgram, "ptsname");
    int slave = open(name, O_RDWR | O_NOCTTY);
    if (slave < 0) die(kProgram, "opening the pty slave");
    struct termios raw;
    if (tcgetattr(slave, &raw) != 0) die(kProgram, "tcgetattr");
    cfmakeraw(&raw);   // bytes as they are: no echo, no line editing, no CR/LF mapping
    if (tcsetattr(slave, TCSANOW, &raw) != 0) die(kProgram, "tcsetattr");
    set_nonblocking(master);
    set_nonblocking(0);
    printf("%s\n", name);
    fflush(stdout);
    return master;
}

int main(int argc, char** argv) {
    Period period{0, 0};
    long parent = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bit-cycles") == 0 && i + 1 < argc) {
            char* end = nullptr;
            period.n = strtoull(argv[++i], &end, 10);
            period.d = *end == '/' ? strtoull(end + 1, &end, 10) : 1;
            if (*end != '\0') period.d = 0;
        } else if (strcmp(argv[i], "--parent-pid") == 0 && i + 1 < argc) {
            parent = atol(argv[++i]);
        } else {
            fprintf(stderr, "%s: unknown argument %s\n", kProgram, argv[i]);
            return kExitError;
        }
    }
    if (period.d == 0 || period.n < 2 * period.d) {
        fprintf(stderr, "%s: --bit-cycles N or N/D (N >= 2D > 0) is required\n", kProgram);
        return kExitError;
    }
    signal(SIGPIPE, SIG_IGN);
    int master = open_pty();

    Design design;
    Vlink* top = design.top.get();
    Serializer ser(period);
    Deserializer des(period);
    std::vector<uint8_t> out;

    top->uart_rx = 1;
    design.reset();

    const uint64_t& cycles = design.cycles;
    uint64_t last_bit = cycles, last_tx_byte = cycles, quiet_ticks = 0, write_at = 0;
    for (;;) {
        top->uart_rx = ser.level();
        design.fall();
        design.rise();
        int byte = des.sample(top->uart_tx);
        if (byte >= 0) {
            out.push_back(static_cast<uint8_t>(byte));
            last_tx_byte = cycles;
        }
        bool moving = ser.busy() || des.busy();
        if (moving) last_bit = cycles;
        // hand the reply over once uart_tx has been idle for a byte time (or it is large);
        // if the client does not read, retry a little later rather than every cycle
        if (!out.empty() && cycles >= write_at &&
            (out.size() >= 4096 || (!des.busy() && cycles - last_tx_byte > period.ceil(10)))) {
            write_master(master, out);
            write_at = cycles + 4096;
        }

        if (cycles - last_bit < kQuietCycles) {
            if (cycles % kCheckEvery == 0) {
                read_master(master, ser);
                if (cycles % kServeEvery == 0) check(master, ser, des, cycles, parent, 0);
            }
            quiet_ticks = 0;
        } else if (++quiet_ticks >= kIdleCycles) {
            // idle: nothing on the pins for a while; wait for the host (or the parent)
            check(master, ser, des, cycles, parent, kIdlePollMs);
            quiet_ticks = 0;
        }
    }
}
