// cellsp byte link: a Verilated byte-stream design between stdin and stdout.
// Usage: <binary> [--ctl IN_FD OUT_FD]. Each byte written to IN_FD makes the binary answer
// with the cycle count (decimal, one line) on OUT_FD. Prints nothing to stderr unless an
// error occurs. Exit 0 on stdin EOF (after draining) or when stdout is closed.
#include "harness.h"

static const char* const kProgram = "cellsp-link";
static const size_t kReadChunk = 1 << 16;    // bytes per read() of stdin
static const size_t kInputCap = 1 << 24;     // stop reading stdin beyond this many pending
static const size_t kFlushBytes = 1 << 15;   // flush stdout at this many bytes
static const uint64_t kFlushQuiet = 16;      // ... or after this many cycles without tx
static const size_t kFlushStarved = 64;      // ... or at this many with no input pending (the
                                             // host waits for them to send more)
static const uint64_t kStuckCycles = 1 << 22;  // after stdin EOF: give up on a design that
                                               // takes no input and sends nothing this long

static uint8_t chunk[kReadChunk];

struct Input {
    ByteQueue queue;
    bool eof = false;
};

// Read what stdin holds now (it is non-blocking); exit on a read error.
static void read_input(Input& in) {
    for (int i = 0; i < 4 && in.queue.size() < kInputCap; i++) {
        ssize_t k = read(0, chunk, kReadChunk);
        if (k > 0) {
            in.queue.append(chunk, static_cast<size_t>(k));
            if (static_cast<size_t>(k) < kReadChunk) return;
        } else if (k == 0) {
            in.eof = true;
            return;
        } else {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
            die(kProgram, "reading stdin");
        }
    }
}

struct Control {
    int in_fd = -1, out_fd = -1;
};

// Answer each query byte on the control pipe with the cycle count.
static void serve_control(Control& ctl, uint64_t cycles) {
    uint8_t queries[64];
    ssize_t k = read(ctl.in_fd, queries, sizeof queries);
    if (k == 0) {
        ctl.in_fd = -1;   // the host closed it: stop listening
        return;
    }
    for (ssize_t i = 0; i < k; i++) {
        char line[32];
        int n = snprintf(line, sizeof line, "%llu\n", static_cast<unsigned long long>(cycles));
        if (!write_all(ctl.out_fd, reinterpret_cast<uint8_t*>(line), static_cast<size_t>(n))) {
            ctl.in_fd = -1;
            return;
        }
    }
}

// poll() stdin (unless at EOF or holding enough) and the control pipe; read what is ready.
static void check_inputs(Input& in, Control& ctl, uint64_t cycles, int timeout_ms) {
    struct pollfd fds[2];
    int n = 0, in_slot = -1, ctl_slot = -1;
    if (!in.eof && in.queue.size() < kInputCap) {
        fds[n] = {0, POLLIN, 0};
        in_slot = n++;
    }
    if (ctl.in_fd >= 0) {
        fds[n] = {ctl.in_fd, POLLIN, 0};
        ctl_slot = n++;
    }
    if (n == 0) return;
    if (poll(fds, static_cast<nfds_t>(n), timeout_ms) <= 0) return;
    if (in_slot >= 0 && fds[in_slot].revents) read_input(in);
    if (ctl_slot >= 0 && fds[ctl_slot].revents) serve_control(ctl, cycles);
}

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);   // a closed stdout shows up as EPIPE from write()
    Control ctl;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ctl") == 0 && i + 2 < argc) {
            ctl.in_fd = atoi(argv[i + 1]);
            ctl.out_fd = atoi(argv[i + 2]);
            i += 2;
        } else {
            fprintf(stderr, "%s: unknown argument %s\n", kProgram, argv[i]);
            return kExitError;
        }
    }
    set_nonblocking(0);
    if (ctl.in_fd >= 0) set_nonblocking(ctl.in_fd);

    Design design;
    Vlink* top = design.top.get();
    Input in;
    std::vector<uint8_t> out;
    out.reserve(kFlushBytes * 2);

    top->rx_valid = 0;
    top->rx_payload = 0;
    top->tx_ready = 0;
    design.reset();

    const uint64_t& cycles = design.cycles;
    uint64_t last_tx = cycles, last_activity = cycles, last_check = 0;
    for (;;) {
        bool valid = !in.queue.empty();
        top->rx_valid = valid;
        top->rx_payload = valid ? in.queue.front() : 0;
        top->tx_ready = 1;
        design.fall();
        if (valid && top->rx_ready) {
            in.queue.pop();
            last_activity = cycles;
        }
        if (top->tx_valid) {
            out.push_back(top->tx_payload);
            last_tx = last_activity = cycles;
        }
        design.rise();

        if (!out.empty() && (out.size() >= kFlushBytes || cycles - last_tx > kFlushQuiet
                             || (in.queue.empty() && out.size() >= kFlushStarved))) {
            if (!write_all(1, out.data(), out.size())) break;   // stdout closed: stop
            out.clear();
        }
        uint64_t since = cycles - last_check;
        if (since >= 1024 || (in.queue.empty() && since >= 16)) {
            check_inputs(in, ctl, cycles, 0);
            last_check = cycles;
        }
        if (in.eof && !in.queue.empty() && cycles - last_activity >= kStuckCycles) {
            // the host has gone, and the design stopped taking input: do not tick forever
            if (!out.empty()) write_all(1, out.data(), out.size());
            fprintf(stderr, "%s: stdin closed, but the design took no byte and sent none for "
                    "%llu cycles; %zu input bytes left unread\n", kProgram,
                    static_cast<unsigned long long>(kStuckCycles), in.queue.size());
            top->final();
            return kExitStuck;
        }
        if (in.queue.empty() && cycles - last_activity >= kIdleCycles) {
            if (!out.empty()) {
                if (!write_all(1, out.data(), out.size())) break;
                out.clear();
            }
            if (in.eof) break;   // drained
            check_inputs(in, ctl, cycles, kIdlePollMs);
            last_check = last_activity = cycles;   // tick another kIdleCycles, then block again
        }
    }
    top->final();
    return kExitOk;
}
