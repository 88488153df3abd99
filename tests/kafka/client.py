"""An independent Kafka client (confluent-kafka) around velo in the tests.

  client.py produce BOOTSTRAP TOPIC N        JSON sensor readings
  client.py check BOOTSTRAP TOPIC N          checks the alerts velo wrote
  client.py produce-avro BOOTSTRAP TOPIC REGISTRY
  client.py check-avro BOOTSTRAP TOPIC REGISTRY
  client.py produce-avro-plain BOOTSTRAP TOPIC SCHEMA_FILE N   plain Avro binary, no framing
  client.py produce-proto BOOTSTRAP TOPIC DESCRIPTOR_OUT N [nested]
                                         protobuf, and its descriptor set (nested: with a
                                         message, a repeated message, a repeated string and a map)
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer


def readings(n):
    for i in range(n):
        yield {"device": f"d{i % 7}", "temperature": (i * 7) % 50 + 0.5}


def consume(bootstrap, topic, want, deserialize=None, timeout=30):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"py-check-{time.time()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    out = []
    deadline = time.time() + timeout
    while len(out) < want and time.time() < deadline:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        out.append((m.key(), deserialize(m) if deserialize else json.loads(m.value())))
    c.close()
    return out


def main():
    cmd, bootstrap, topic = sys.argv[1:4]
    if cmd == "produce":
        p = Producer({"bootstrap.servers": bootstrap})
        for r in readings(int(sys.argv[4])):
            p.produce(topic, json.dumps(r).encode(), key=r["device"].encode())
            p.poll(0)
        assert p.flush(30) == 0, "undelivered messages"
    elif cmd == "check":
        expected = [r for r in readings(int(sys.argv[4])) if r["temperature"] > 30]
        got = consume(bootstrap, topic, len(expected))
        assert len(got) == len(expected), f"{len(got)} alerts, expected {len(expected)}"
        for key, v in got:
            assert key.decode() == v["device"], (key, v)
            assert abs(v["fahrenheit"] - (v["temperature"] * 1.8 + 32)) < 1e-9, v
        print("ok", len(got))
    elif cmd == "produce-avro":
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext
        reg = SchemaRegistryClient({"url": sys.argv[4]})
        v1 = json.dumps({"type": "record", "name": "Payment", "fields": [
            {"name": "id", "type": "long"}, {"name": "amount", "type": "double"}]})
        v2 = json.dumps({"type": "record", "name": "Payment", "fields": [
            {"name": "id", "type": "long"}, {"name": "amount", "type": "double"},
            {"name": "currency", "type": "string", "default": "EUR"}]})
        ctx = SerializationContext(topic, MessageField.VALUE)
        p = Producer({"bootstrap.servers": bootstrap})
        s1 = AvroSerializer(reg, v1)
        for i in range(100):
            p.produce(topic, s1({"id": i, "amount": i * 1.5}, ctx))
        s2 = AvroSerializer(reg, v2)
        last = None
        for i in range(100, 200):
            last = s2({"id": i, "amount": i * 1.5, "currency": "USD"}, ctx)
            p.produce(topic, last)
        p.produce(topic, last[:-6])                                  # truncated body
        p.produce(topic, b"\x00" + (999).to_bytes(4, "big") + last[5:])  # unknown schema id
        assert p.flush(30) == 0
    elif cmd == "check-avro":
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer
        from confluent_kafka.serialization import MessageField, SerializationContext
        reg = SchemaRegistryClient({"url": sys.argv[4]})
        de = AvroDeserializer(reg)
        ctx = SerializationContext(topic, MessageField.VALUE)
        got = consume(bootstrap, topic, 200, lambda m: de(m.value(), ctx))
        ids = sorted(v["id"] for _, v in got)
        assert ids == list(range(200)), ids[:10]
        for key, v in got:
            assert key.decode() == str(v["id"]), (key, v)
        print("ok", len(got))
    elif cmd == "produce-avro-plain":
        import io
        import fastavro
        schema = fastavro.parse_schema(json.load(open(sys.argv[4])))
        p = Producer({"bootstrap.servers": bootstrap})
        for i in range(int(sys.argv[5])):
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, schema, {"id": i, "sensor": f"s{i % 4}", "value": i / 4})
            p.produce(topic, buf.getvalue())
        assert p.flush(30) == 0
    elif cmd == "produce-proto":
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        F = descriptor_pb2.FieldDescriptorProto
        fdp = descriptor_pb2.FileDescriptorProto(name="shop.proto", package="shop", syntax="proto3")
        e = fdp.enum_type.add(name="Status")
        e.value.add(name="NEW", number=0)
        e.value.add(name="PAID", number=1)
        m = fdp.message_type.add(name="Order")
        m.field.add(name="id", number=1, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
        m.field.add(name="customer", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
        m.field.add(name="amount", number=3, type=F.TYPE_DOUBLE, label=F.LABEL_OPTIONAL)
        m.field.add(name="status", number=4, type=F.TYPE_ENUM, type_name=".shop.Status", label=F.LABEL_OPTIONAL)
        m.field.add(name="delta", number=5, type=F.TYPE_SINT32, label=F.LABEL_OPTIONAL)
        nested = len(sys.argv) > 6 and sys.argv[6] == "nested"
        if nested:
            a = fdp.message_type.add(name="Address")
            a.field.add(name="city", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
            a.field.add(name="zip", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
            it = fdp.message_type.add(name="Item")
            it.field.add(name="sku", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
            it.field.add(name="qty", number=2, type=F.TYPE_INT32, label=F.LABEL_OPTIONAL)
            m.field.add(name="tags", number=6, type=F.TYPE_STRING, label=F.LABEL_REPEATED)
            m.field.add(name="address", number=7, type=F.TYPE_MESSAGE, type_name=".shop.Address", label=F.LABEL_OPTIONAL)
            m.field.add(name="items", number=8, type=F.TYPE_MESSAGE, type_name=".shop.Item", label=F.LABEL_REPEATED)
            entry = m.nested_type.add(name="AttrsEntry")
            entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
            entry.field.add(name="value", number=2, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL)
            entry.options.map_entry = True
            m.field.add(name="attrs", number=9, type=F.TYPE_MESSAGE, type_name=".shop.Order.AttrsEntry", label=F.LABEL_REPEATED)
        with open(sys.argv[4], "wb") as f:
            f.write(descriptor_pb2.FileDescriptorSet(file=[fdp]).SerializeToString())
        pool = descriptor_pool.DescriptorPool()
        pool.Add(fdp)
        Order = message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))
        p = Producer({"bootstrap.servers": bootstrap})
        for i in range(int(sys.argv[5])):
            msg = Order(id=i, customer=f"c{i % 5}", amount=i * 0.5, status=i % 2, delta=-i)
            if nested:
                msg.tags.extend(["t"] * (i % 4))
                if i % 3 != 0:
                    msg.address.city = f"city{i % 3}"
                    msg.address.zip = 1000 + i
                for k in range(i % 3):
                    it = msg.items.add()
                    it.sku = f"s{i}-{k}"
                    it.qty = k + 1
                msg.attrs["n"] = i
                msg.attrs["half"] = i // 2
            p.produce(topic, msg.SerializeToString())
        p.produce(topic, b"\x12\x05ab")  # a string field longer than the message
        assert p.flush(30) == 0
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
