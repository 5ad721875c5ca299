"""cellsp.host"""
