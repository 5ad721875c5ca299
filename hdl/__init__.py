"""cellsp.hdl"""
