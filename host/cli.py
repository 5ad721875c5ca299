def main():
    print("cellsp")
