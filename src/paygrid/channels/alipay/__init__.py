"""The Alipay channel (支付宝): protocol layer (signing, client, bill parser) and its sandbox."""
