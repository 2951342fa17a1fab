import Foundation
FileHandle.standardError.write(Data("dev-broker: not implemented yet\n".utf8))
exit(2)
