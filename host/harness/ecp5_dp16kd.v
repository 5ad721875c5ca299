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
// Block RAM contents start as INITVAL_00..3F; cellsp's gateware initialises none, so the
// model starts at zero and stops the simulation when an INITVAL is not zero.
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
  // every INITVAL_xx (320 bits each): they must be zero (see above)
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
  integer row;
  initial begin
    for (row = 0; row < 1024; row = row + 1) mem[row] = 18'b0;
    doa = 18'b0;
    dob = 18'b0;
    if ((INITVAL_00 | INITVAL_01 | INITVAL_02 | INITVAL_03 | INITVAL_04 | INITVAL_05 | INITVAL_06 | INITVAL_07 |
         INITVAL_08 | INITVAL_09 | INITVAL_0A | INITVAL_0B | INITVAL_0C | INITVAL_0D | INITVAL_0E | INITVAL_0F |
         INITVAL_10 | INITVAL_11 | INITVAL_12 | INITVAL_13 | INITVAL_14 | INITVAL_15 | INITVAL_16 | INITVAL_17 |
         INITVAL_18 | INITVAL_19 | INITVAL_1A | INITVAL_1B | INITVAL_1C | INITVAL_1D | INITVAL_1E | INITVAL_1F |
         INITVAL_20 | INITVAL_21 | INITVAL_22 | INITVAL_23 | INITVAL_24 | INITVAL_25 | INITVAL_26 | INITVAL_27 |
         INITVAL_28 | INITVAL_29 | INITVAL_2A | INITVAL_2B | INITVAL_2C | INITVAL_2D | INITVAL_2E | INITVAL_2F |
         INITVAL_30 | INITVAL_31 | INITVAL_32 | INITVAL_33 | INITVAL_34 | INITVAL_35 | INITVAL_36 | INITVAL_37 |
         INITVAL_38 | INITVAL_39 | INITVAL_3A | INITVAL_3B | INITVAL_3C | INITVAL_3D | INITVAL_3E | INITVAL_3F) != 320'b0)
      $fatal(1, "DP16KD model: initial contents (INITVAL_xx) are not modelled");
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
