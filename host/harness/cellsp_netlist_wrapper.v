// A board's synthesised netlist (module `CELLSP_TOP, cellsp.boards.netlist's pin adapter, with
// ports clk, uart_rx and uart_tx) under a fixed name for pty_main.cpp. The netlist resets
// itself at power-on, as on the board: the harness's `rst` is not connected.
module cellsp_netlist_wrapper (input clk, input rst, input uart_rx, output uart_tx);
    `CELLSP_TOP dut (.clk(clk), .uart_rx(uart_rx), .uart_tx(uart_tx));
endmodule
