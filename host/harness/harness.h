// What both cellsp harnesses (link_main.cpp, pty_main.cpp) do with a Verilated design: its
// clock and reset, a queue of bytes on their way in, whole writes to a descriptor, the idle
// rhythm and the exit codes.
//
// The design is the wrapper of cellsp_link_wrapper.v or cellsp_pty_wrapper.v, compiled with
// --prefix Vlink: it has a clock `clk` and a synchronous reset `rst`; the harness owns its
// other ports.
#ifndef CELLSP_HARNESS_H
#define CELLSP_HARNESS_H

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "Vlink.h"
#include "verilated.h"

// Exit codes: 0 a normal end; 2 bad arguments or a failed system call (stderr says which);
// 3 the link's design stopped taking input after the host had gone.
static const int kExitOk = 0;
static const int kExitError = 2;
static const int kExitStuck = 3;

static const int kResetCycles = 4;          // cycles the design is held in reset at start
static const uint64_t kIdleCycles = 1000;   // cycles ticked between idle polls
static const int kIdlePollMs = 10;          // the longest idle poll

// Print "<program>: <what>: <errno's text>" on stderr and exit with kExitError.
[[noreturn]] static void die(const char* program, const char* what) {
    fprintf(stderr, "%s: %s: %s\n", program, what, strerror(errno));
    exit(kExitError);
}

static void set_nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

// Write all `n` bytes to a blocking descriptor; false if it failed (e.g. EPIPE: closed).
static bool write_all(int fd, const uint8_t* p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += k;
        n -= static_cast<size_t>(k);
    }
    return true;
}

// Bytes waiting to enter the design, oldest first. Taken bytes stay before `head` until the
// queue drains or they are half the buffer, so taking a byte costs O(1) and so does appending,
// amortised.
struct ByteQueue {
    std::vector<uint8_t> buf;
    size_t head = 0;
    size_t size() const { return buf.size() - head; }
    bool empty() const { return head == buf.size(); }
    uint8_t front() const { return buf[head]; }
    void pop() {
        if (++head == buf.size()) {
            buf.clear();
            head = 0;
        }
    }
    void append(const uint8_t* p, size_t n) {
        if (head > 0 && head * 2 >= buf.size()) {
            buf.erase(buf.begin(), buf.begin() + static_cast<long>(head));
            head = 0;
        }
        buf.insert(buf.end(), p, p + n);
    }
};

// The Verilated design and its clock. A cycle is fall() (the clock low: the inputs set for
// the coming edge reach the combinational outputs) then rise() (the edge: registers update).
struct Design {
    std::unique_ptr<VerilatedContext> context = std::make_unique<VerilatedContext>();
    std::unique_ptr<Vlink> top = std::make_unique<Vlink>(context.get());
    uint64_t cycles = 0;   // rising edges so far, reset included

    void fall() {
        top->clk = 0;
        top->eval();
    }
    void rise() {
        top->clk = 1;
        top->eval();
        cycles++;
    }
    // Hold the design in reset for kResetCycles cycles, then release it; the caller sets the
    // other inputs first.
    void reset() {
        top->rst = 1;
        fall();
        for (int i = 0; i < kResetCycles; i++) {
            rise();
            fall();
        }
        top->rst = 0;
    }
};

#endif  // CELLSP_HARNESS_H
