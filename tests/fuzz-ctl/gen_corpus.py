#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the seed corpus in tests/fuzz-ctl/corpus/ctl/ (checked in; rerun after changing
the control protocol). Usage: tests/fuzz-ctl/gen_corpus.py [OUTDIR]"""
import hashlib
import os
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), 'corpus')

SEEDS = [
    b'{"version":1,"id":1,"cmd":"status"}',
    b'{"version":1,"id":"x","cmd":"pools"}',
    b'{"version":1,"cmd":"pool","pool":"main","width":64}',
    b'{"version":1,"cmd":"guests"}',
    b'{"version":1,"cmd":"regions","guest":"vm0","pool":"main"}',
    b'{"version":1,"cmd":"regions","guest":3}',
    b'{"version":1,"cmd":"alloc","pool":"main","bytes":2097152,"align":4194304}',
    b'{"version":1,"cmd":"free","handle":"0x100000001"}',
    b'{"version":1,"cmd":"free","handle":4294967297}',
    b'{"version":1,"cmd":"hash","handle":"0x100000001"}',
    b'{"version":1,"cmd":"xen-attach","domain":"guest1"}',
    b'{"version":1,"cmd":"attach","domain":"cam1","class":"camera"}',
    b'{"version":1,"cmd":"detach","domain":"cam1"}',
    b'{"version":1,"cmd":"domain","action":"define","xml":"<domain type=\'qemu\'><name>d</name></domain>"}',
    b'{"version":1,"cmd":"domain","action":"destroy","domain":"d"}',
    b'{"version":1,"cmd":"xen-detach","domain":7}',
    b'{"version":1,"cmd":"compact","pool":"main"}',
    b'{"version":1,"cmd":"drain","guest":"vm1"}',
    b'{"version":1,"id":{"a":[1,2.5,null,true]},"cmd":"stats"}',
    b'{"version":2,"cmd":"status"}',
    b'{"version":1,"cmd":"pool","pool":"\xc3\x28"}',
    b'[1,2,3]',
    b'not json',
    b'  {"version":1,"cmd":"status"}\r',
]

os.makedirs(os.path.join(OUT, 'ctl'), exist_ok=True)
for s in SEEDS:
    with open(os.path.join(OUT, 'ctl', hashlib.sha1(s).hexdigest()), 'wb') as f:
        f.write(s)
