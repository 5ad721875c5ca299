// The byte-stream design (module `CELLSP_TOP, defined on Verilator's command line) between
// registers, with plain port names for link_main.cpp.
//
// In C++, the "__" of Amaranth's port names becomes "___05F"; plain names keep the C++
// independent of that and of the design's module name.
// The registers put state between every top-level input and the design. The model evaluates
// all logic that reads a top-level input in its input-combinational region ("ico"), which runs
// on every eval(), twice a cycle here; behind a register, an input is state like any other, and
// the logic that reads it runs once a cycle, after the clock edge.
// - rst: Amaranth writes each synchronous reset into the next-state logic (`always @*` blocks
//   read rst). Registering it took 16x16 cells at P = 8 from 29% of the time in ico to under
//   2%, and about 25% faster. The design leaves reset one cycle later.
// - rx: a one-byte register that takes the offered byte whenever it is empty or the design
//   takes its byte (full rate, one cycle of latency). `rx_ready` then depends on the design's
//   state only, never combinationally on `rx_valid`.
// - tx: a two-byte FIFO whose `ready` towards the design is "not full" (a register), so the
//   design's send logic does not read `tx_ready`; while the C++ takes every byte, it never
//   fills and the design sends a byte a cycle.
// Together the rx and tx registers cut the engine's ico share (3.4% of a 16x16, P = 8 model's
// instructions) to nothing.
module cellsp_link_wrapper (
    input clk, input rst,
    input rx_valid, output rx_ready, input [7:0] rx_payload,
    output tx_valid, input tx_ready, output [7:0] tx_payload
);
    reg rst_q = 1'b1;
    always @(posedge clk) rst_q <= rst;

    reg rx_full = 1'b0;
    reg [7:0] rx_byte = 8'd0;
    wire dut_rx_ready;
    assign rx_ready = ~rx_full | dut_rx_ready;
    always @(posedge clk)
        if (rst_q) rx_full <= 1'b0;
        else if (rx_ready) begin
            rx_full <= rx_valid;
            rx_byte <= rx_payload;
        end

    reg [1:0] tx_count = 2'd0;       // bytes held: tx_byte0 first, then tx_byte1
    reg [7:0] tx_byte0 = 8'd0, tx_byte1 = 8'd0;
    wire dut_tx_valid;
    wire [7:0] dut_tx_payload;
    wire push = dut_tx_valid & (tx_count != 2'd2);
    wire pop = tx_valid & tx_ready;
    assign tx_valid = tx_count != 2'd0;
    assign tx_payload = tx_byte0;
    always @(posedge clk)
        if (rst_q) tx_count <= 2'd0;
        else begin
            tx_count <= tx_count + push - pop;
            case ({push, pop})
                2'b01: tx_byte0 <= tx_byte1;
                2'b10: if (tx_count == 2'd0) tx_byte0 <= dut_tx_payload;
                       else tx_byte1 <= dut_tx_payload;
                2'b11: tx_byte0 <= dut_tx_payload;     // the one held leaves, the new one is next
                default: ;
            endcase
        end

    `CELLSP_TOP dut (
        .clk(clk), .rst(rst_q),
        .rx__valid(rx_full), .rx__ready(dut_rx_ready), .rx__payload(rx_byte),
        .tx__valid(dut_tx_valid), .tx__ready(tx_count != 2'd2), .tx__payload(dut_tx_payload)
    );
endmodule
