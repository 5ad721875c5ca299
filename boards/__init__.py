"""cellsp.boards"""
