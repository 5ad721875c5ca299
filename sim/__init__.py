"""cellsp.sim"""
