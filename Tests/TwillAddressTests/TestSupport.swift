// Foundation is used in tests only, to prove the Codable conformances work with real JSON.
import Foundation
import Testing

@testable import TwillAddress

/// Runs a parse and returns its `AddressError`, or nil if it succeeded.
///
/// The closure is untyped-throwing because typed-throws inference does not reach into
/// closures inside `#expect`/`#require`; any other error type is recorded as a failure.
func addressError<T>(_ body: () throws -> T, sourceLocation: SourceLocation = #_sourceLocation) -> AddressError? {
    do {
        _ = try body()
        return nil
    } catch let error as AddressError {
        return error
    } catch {
        Issue.record("unexpected error type: \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// A keyed wrapper so values are encoded inside an object, as they are in real configs.
struct Box<Value: Codable>: Codable {
    var value: Value
}

/// Encodes `value` inside `{"value": ...}` and returns the JSON text.
func jsonText<Value: Codable>(_ value: Value) throws -> String {
    let encoder = JSONEncoder()
    // Keep "/" readable in CIDR strings; the default escapes it as "\/".
    encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
    return String(decoding: try encoder.encode(Box(value: value)), as: UTF8.self)
}

/// Decodes a `{"value": ...}` JSON text.
func decodeJSON<Value: Codable>(_ type: Value.Type, from text: String) throws -> Value {
    try JSONDecoder().decode(Box<Value>.self, from: Data(text.utf8)).value
}

/// Decodes `string` as a `Value` and returns the `dataCorrupted` debug description, or
/// nil if decoding succeeded or failed some other way.
func dataCorruptedDescription<Value: Codable>(_ type: Value.Type, decoding string: String) throws -> String? {
    let json = try jsonText(string)
    do {
        _ = try decodeJSON(type, from: json)
        return nil
    } catch DecodingError.dataCorrupted(let context) {
        return context.debugDescription
    }
}

/// Checks that a LosslessStringConvertible value survives description -> init.
func losslessRoundTrip<T: LosslessStringConvertible & Equatable>(_ value: T) -> Bool {
    T(value.description) == value
}
