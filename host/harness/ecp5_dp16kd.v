// A simulation model of the ECP5 block RAM DP16KD (18 kbit, two read/write ports), for the
// netlists of cellsp.boards.netlist: Yosys's ecp5/cells_sim.v declares DP16KD as a black box.
// Written from the ECP5 memory usage guide (Lattice FPGA-TN-02204):
//
//   storage: 1024 rows of 18 bits, two halves of 9 (8 data bits and a parity bit each);
//   x18: row AD[13:4], AD[1:0] the byte-write enables of DI[8:0] and DI[17:9];
//   x9:  row AD[13:4], half AD[3], data DI[8:0] / DO[8:0];
//   x4, x2, x1: the 16,384 data bits (no parity) at bit address AD[13:0] (its low log2(width)
//        bits ignored): row AD[13:4], half AD[3], bit AD[2:0] of the half's 8 data bits;
//   a port works when its chip selects CS[2:0] equal CSDECODE ("0b..."), reads and writes on
//   its clock's rising edge (falling with CLKxMUX "INV") when CE is high; WRITEMODE NORMAL
//   keeps the output during a write, WRITETHROUGH shows the written data, READBEFOREWRITE
//   the data before the write; REGMODE OUTREG adds an output register enabled by OCE; RST
//   clears the outputs (synchronously with the clock here, whatever RESETMODE says).
//
// The contents start as INITVAL_00..3F: INITVAL_xx holds rows 16 xx .. 16 xx + 15, row
// 16 xx + i in its bits [20 i + 17 : 20 i] (the layout Yosys's DP16KD mapping writes).
module DP16KD(
  input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
  input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
  input CEA, OCEA, CLKA, WEA, RSTA,
  input CSA2, CSA1, CSA0,
  output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
  input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
  input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
  input CEB, OCEB, CLKB, WEB, RSTB,
  input CSB2, CSB1, CSB0,
  output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
  parameter DATA_WIDTH_A = 18;
  parameter DATA_WIDTH_B = 18;
  parameter REGMODE_A = "NOREG";
  parameter REGMODE_B = "NOREG";
  parameter RESETMODE = "SYNC";
  parameter ASYNC_RESET_RELEASE = "SYNC";
  parameter CSDECODE_A = "0b000";
  parameter CSDECODE_B = "0b000";
  parameter WRITEMODE_A = "NORMAL";
  parameter WRITEMODE_B = "NORMAL";
  parameter CLKAMUX = "CLKA";
  parameter CLKBMUX = "CLKB";
  parameter GSR = "ENABLED";
  parameter WID = 0;
  // the initial contents, 320 bits each (see above)
  parameter INITVAL_00 = 320'h0; parameter INITVAL_01 = 320'h0; parameter INITVAL_02 = 320'h0;
  parameter INITVAL_03 = 320'h0; parameter INITVAL_04 = 320'h0; parameter INITVAL_05 = 320'h0;
  parameter INITVAL_06 = 320'h0; parameter INITVAL_07 = 320'h0; parameter INITVAL_08 = 320'h0;
  parameter INITVAL_09 = 320'h0; parameter INITVAL_0A = 320'h0; parameter INITVAL_0B = 320'h0;
  parameter INITVAL_0C = 320'h0; parameter INITVAL_0D = 320'h0; parameter INITVAL_0E = 320'h0;
  parameter INITVAL_0F = 320'h0; parameter INITVAL_10 = 320'h0; parameter INITVAL_11 = 320'h0;
  parameter INITVAL_12 = 320'h0; parameter INITVAL_13 = 320'h0; parameter INITVAL_14 = 320'h0;
  parameter INITVAL_15 = 320'h0; parameter INITVAL_16 = 320'h0; parameter INITVAL_17 = 320'h0;
  parameter INITVAL_18 = 320'h0; parameter INITVAL_19 = 320'h0; parameter INITVAL_1A = 320'h0;
  parameter INITVAL_1B = 320'h0; parameter INITVAL_1C = 320'h0; parameter INITVAL_1D = 320'h0;
  parameter INITVAL_1E = 320'h0; parameter INITVAL_1F = 320'h0; parameter INITVAL_20 = 320'h0;
  parameter INITVAL_21 = 320'h0; parameter INITVAL_22 = 320'h0; parameter INITVAL_23 = 320'h0;
  parameter INITVAL_24 = 320'h0; parameter INITVAL_25 = 320'h0; parameter INITVAL_26 = 320'h0;
  parameter INITVAL_27 = 320'h0; parameter INITVAL_28 = 320'h0; parameter INITVAL_29 = 320'h0;
  parameter INITVAL_2A = 320'h0; parameter INITVAL_2B = 320'h0; parameter INITVAL_2C = 320'h0;
  parameter INITVAL_2D = 320'h0; parameter INITVAL_2E = 320'h0; parameter INITVAL_2F = 320'h0;
  parameter INITVAL_30 = 320'h0; parameter INITVAL_31 = 320'h0; parameter INITVAL_32 = 320'h0;
  parameter INITVAL_33 = 320'h0; parameter INITVAL_34 = 320'h0; parameter INITVAL_35 = 320'h0;
  parameter INITVAL_36 = 320'h0; parameter INITVAL_37 = 320'h0; parameter INITVAL_38 = 320'h0;
  parameter INITVAL_39 = 320'h0; parameter INITVAL_3A = 320'h0; parameter INITVAL_3B = 320'h0;
  parameter INITVAL_3C = 320'h0; parameter INITVAL_3D = 320'h0; parameter INITVAL_3E = 320'h0;
  parameter INITVAL_3F = 320'h0;

  wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
  wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
  wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
  wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
  reg [17:0] doa, dob;
  assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = doa;
  assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} = dob;

  reg [17:0] mem [0:1023];

  // INITVAL_xx of index `chunk`
  function automatic [319:0] initval(input [5:0] chunk);
    case (chunk)
      6'h00: initval = INITVAL_00;
      6'h01: initval = INITVAL_01;
      6'h02: initval = INITVAL_02;
      6'h03: initval = INITVAL_03;
      6'h04: initval = INITVAL_04;
      6'h05: initval = INITVAL_05;
      6'h06: initval = INITVAL_06;
      6'h07: initval = INITVAL_07;
      6'h08: initval = INITVAL_08;
      6'h09: initval = INITVAL_09;
      6'h0A: initval = INITVAL_0A;
      6'h0B: initval = INITVAL_0B;
      6'h0C: initval = INITVAL_0C;
      6'h0D: initval = INITVAL_0D;
      6'h0E: initval = INITVAL_0E;
      6'h0F: initval = INITVAL_0F;
      6'h10: initval = INITVAL_10;
      6'h11: initval = INITVAL_11;
      6'h12: initval = INITVAL_12;
      6'h13: initval = INITVAL_13;
      6'h14: initval = INITVAL_14;
      6'h15: initval = INITVAL_15;
      6'h16: initval = INITVAL_16;
      6'h17: initval = INITVAL_17;
      6'h18: initval = INITVAL_18;
      6'h19: initval = INITVAL_19;
      6'h1A: initval = INITVAL_1A;
      6'h1B: initval = INITVAL_1B;
      6'h1C: initval = INITVAL_1C;
      6'h1D: initval = INITVAL_1D;
      6'h1E: initval = INITVAL_1E;
      6'h1F: initval = INITVAL_1F;
      6'h20: initval = INITVAL_20;
      6'h21: initval = INITVAL_21;
      6'h22: initval = INITVAL_22;
      6'h23: initval = INITVAL_23;
      6'h24: initval = INITVAL_24;
      6'h25: initval = INITVAL_25;
      6'h26: initval = INITVAL_26;
      6'h27: initval = INITVAL_27;
      6'h28: initval = INITVAL_28;
      6'h29: initval = INITVAL_29;
      6'h2A: initval = INITVAL_2A;
      6'h2B: initval = INITVAL_2B;
      6'h2C: initval = INITVAL_2C;
      6'h2D: initval = INITVAL_2D;
      6'h2E: initval = INITVAL_2E;
      6'h2F: initval = INITVAL_2F;
      6'h30: initval = INITVAL_30;
      6'h31: initval = INITVAL_31;
      6'h32: initval = INITVAL_32;
      6'h33: initval = INITVAL_33;
      6'h34: initval = INITVAL_34;
      6'h35: initval = INITVAL_35;
      6'h36: initval = INITVAL_36;
      6'h37: initval = INITVAL_37;
      6'h38: initval = INITVAL_38;
      6'h39: initval = INITVAL_39;
      6'h3A: initval = INITVAL_3A;
      6'h3B: initval = INITVAL_3B;
      6'h3C: initval = INITVAL_3C;
      6'h3D: initval = INITVAL_3D;
      6'h3E: initval = INITVAL_3E;
      6'h3F: initval = INITVAL_3F;
    endcase
  endfunction

  integer row;
  reg [319:0] chunk_bits;
  initial begin
    for (row = 0; row < 1024; row = row + 1) begin
      chunk_bits = initval(row / 16);
      mem[row] = chunk_bits[20 * (row % 16) +: 18];
    end
    doa = 18'b0;
    dob = 18'b0;
    if (!(DATA_WIDTH_A == 1 || DATA_WIDTH_A == 2 || DATA_WIDTH_A == 4 || DATA_WIDTH_A == 9 || DATA_WIDTH_A == 18) ||
        !(DATA_WIDTH_B == 1 || DATA_WIDTH_B == 2 || DATA_WIDTH_B == 4 || DATA_WIDTH_B == 9 || DATA_WIDTH_B == 18))
      $fatal(1, "DP16KD model: unsupported DATA_WIDTH");
  end

  // "0bXYZ" -> the chip-select value {X, Y, Z}
  function automatic [2:0] decode(input [39:0] text);
    decode = {text[23:16] == "1", text[15:8] == "1", text[7:0] == "1"};
  endfunction

  // The 18 bits at `address` after a write of `data` with `width`: the row's new contents.
  function automatic [17:0] written(input [17:0] old, input [13:0] address, input [17:0] data,
                                    input integer width);
    reg [17:0] out;
    integer b;
    begin
      out = old;
      if (width == 18) begin
        if (address[0]) out[8:0] = data[8:0];
        if (address[1]) out[17:9] = data[17:9];
      end else if (width == 9) begin
        if (address[3]) out[17:9] = data[8:0]; else out[8:0] = data[8:0];
      end else begin
        for (b = 0; b < width; b = b + 1)
          out[data_bit(address, width, b)] = data[b];
      end
      written = out;
    end
  endfunction

  // Where bit `b` of a `width`-bit (1, 2 or 4) word at `address` sits in its 18-bit row.
  function automatic integer data_bit(input [13:0] address, input integer width, input integer b);
    reg [13:0] bit_address;
    begin
      bit_address = (address & ~(width - 1)) + b;
      data_bit = (bit_address[3] ? 9 : 0) + bit_address[2:0];
    end
  endfunction

  // The `width`-bit word at `address` of the 18-bit row `contents`, on DO[width-1:0].
  function automatic [17:0] read(input [17:0] contents, input [13:0] address, input integer width);
    reg [17:0] out;
    integer b;
    begin
      out = 18'b0;
      if (width == 18) out = contents;
      else if (width == 9) out[8:0] = address[3] ? contents[17:9] : contents[8:0];
      else
        for (b = 0; b < width; b = b + 1)
          out[b] = contents[data_bit(address, width, b)];
      read = out;
    end
  endfunction

  wire clka = (CLKAMUX == "INV") ? ~CLKA : CLKA;
  wire clkb = (CLKBMUX == "INV") ? ~CLKB : CLKB;
  wire selected_a = {CSA2, CSA1, CSA0} == decode(CSDECODE_A);
  wire selected_b = {CSB2, CSB1, CSB0} == decode(CSDECODE_B);
  reg [17:0] ram_doa = 18'b0, ram_dob = 18'b0;

  always @(posedge clka) begin
    if (RSTA) ram_doa <= 18'b0;
    else if (CEA && selected_a) begin
      if (!WEA) ram_doa <= read(mem[ada[13:4]], ada, DATA_WIDTH_A);
      else if (WRITEMODE_A == "READBEFOREWRITE") ram_doa <= read(mem[ada[13:4]], ada, DATA_WIDTH_A);
      else if (WRITEMODE_A == "WRITETHROUGH")
        ram_doa <= read(written(mem[ada[13:4]], ada, dia, DATA_WIDTH_A), ada, DATA_WIDTH_A);
      if (WEA) mem[ada[13:4]] <= written(mem[ada[13:4]], ada, dia, DATA_WIDTH_A);
    end
  end

  always @(posedge clkb) begin
    if (RSTB) ram_dob <= 18'b0;
    else if (CEB && selected_b) begin
      if (!WEB) ram_dob <= read(mem[adb[13:4]], adb, DATA_WIDTH_B);
      else if (WRITEMODE_B == "READBEFOREWRITE") ram_dob <= read(mem[adb[13:4]], adb, DATA_WIDTH_B);
      else if (WRITEMODE_B == "WRITETHROUGH")
        ram_dob <= read(written(mem[adb[13:4]], adb, dib, DATA_WIDTH_B), adb, DATA_WIDTH_B);
      if (WEB) mem[adb[13:4]] <= written(mem[adb[13:4]], adb, dib, DATA_WIDTH_B);
    end
  end

  generate
    if (REGMODE_A == "OUTREG") begin : out_reg_a
      always @(posedge clka) if (RSTA) doa <= 18'b0; else if (OCEA) doa <= ram_doa;
    end else begin : no_reg_a
      always @(*) doa = ram_doa;
    end
    if (REGMODE_B == "OUTREG") begin : out_reg_b
      always @(posedge clkb) if (RSTB) dob <= 18'b0; else if (OCEB) dob <= ram_dob;
    end else begin : no_reg_b
      always @(*) dob = ram_dob;
    end
  endgenerate
endmodule
