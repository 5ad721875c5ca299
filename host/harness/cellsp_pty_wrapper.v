// The board design (module `CELLSP_TOP, defined on Verilator's command line) under a fixed
// name for pty_main.cpp; Amaranth's plain 1-bit ports keep their names.
module cellsp_pty_wrapper (input clk, input rst, input uart_rx, output uart_tx);
    `CELLSP_TOP dut (.clk(clk), .rst(rst), .uart_rx(uart_rx), .uart_tx(uart_tx));
endmodule
