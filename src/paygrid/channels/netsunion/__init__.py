"""The NetsUnion channel (网联, bank access for payment institutions): the modelled wire
(signed XML messages, SM2/SM3/SM4), the adapter with its agreement flow (协议支付), the
clearing files (清算文件), and its sandbox. See docs/netsunion.md: most of it is MODELLED."""
